"""Dead-node detection, IPMI fencing and recovery of the dead node's VMs. Runs on the primary coordinator only.

Safety rule: a dead node's VMs are restarted elsewhere only after its BMC confirmed it is powered off (unless
cluster.toml says `fencing.on_failure = "migrate"`). A node is dead when its keepalive is older than
`timers.dead_after` intervals, measured on ZooKeeper's clock (znode mtimes), so node clocks do not matter.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pvc.nodeos.ipmi import Bmc, IpmiError
from pvc.nodeos.state import placement
from pvc.nodeos.state.models import FenceInfo, NodeRecord, VmSpec, VmStatus
from pvc.nodeos.state.store import NotFound
from pvc.nodeos.state.vmstate import RUNNING_STATES, handed_off

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)

# Called for each VM of a fenced node before it restarts elsewhere (the storage layer breaks its RBD locks).
BeforeRestart = Callable[[VmSpec, str], None]


def stale(records: list[NodeRecord], ages_ms: dict[str, int], me: str, limit_ms: int) -> list[str]:
    """Names of nodes (other than `me`) that are up by their record but whose keepalive is older than the limit."""
    return [
        r.name
        for r in records
        if r.name != me and r.daemon_state in ("init", "run") and ages_ms.get(r.name, 0) > limit_ms
    ]


class Fencer:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.before_restart: list[BeforeRestart] = []

    def check(self, zk_now_ms: int) -> None:
        """One pass: mark stale nodes dead, then fence dead nodes (unless in maintenance)."""
        cfg = self.d.cfg
        limit_ms = cfg.timers.dead_after * cfg.timers.keepalive_interval * 1000
        records = self.d.state.nodes()
        ages = {}
        for r in records:
            ka = self.d.state.keepalive(r.name)
            if ka is not None:
                ages[r.name] = zk_now_ms - ka[1]
        for name in stale(records, ages, self.d.node.name, limit_ms):
            self._mark_dead(name, ages[name])
        if self.d.state.maintenance():
            return
        for r in self.d.state.nodes():
            if r.daemon_state == "dead" and r.fence is None and r.name != self.d.node.name:
                self.fence(r.name)

    def _mark_dead(self, name: str, age_ms: int) -> None:
        def dead(r: NodeRecord) -> NodeRecord | None:
            if r.daemon_state not in ("init", "run"):
                return None
            return r.model_copy(update={"daemon_state": "dead", "fence": None})

        self.d.state.update_node(name, dead)
        message = f"node {name} is dead: no keepalive for {age_ms / 1000:.1f}s"
        log.warning(message)
        self.d.state.raise_fault(f"node-dead-{name}", "node-dead", message, node=name)

    def fence(self, name: str) -> bool:
        cfg = self.d.cfg
        if not cfg.fencing.enabled:
            return False
        node_cfg = next((n for n in cfg.nodes if n.name == name), None)
        self._set_fence(name, FenceInfo(state="fencing", message="powering off"))
        confirmed, message = False, ""
        if node_cfg is None or node_cfg.ipmi is None:
            message = f"node {name} has no [nodes.ipmi] in cluster.toml"
        else:
            try:
                bmc = Bmc.from_config(node_cfg.ipmi, self.d.base_dir)
                started = time.monotonic()
                bmc.power_off()
                confirmed = bmc.confirm_off(timeout=10)
                message = (
                    f"powered off, confirmed by its BMC in {time.monotonic() - started:.1f}s"
                    if confirmed
                    else "the BMC did not confirm power-off within 10s"
                )
            except IpmiError as exc:
                message = str(exc)
        if confirmed:
            log.warning("fenced node %s: %s", name, message)
            self.d.state.update_node(
                name,
                lambda r: r.model_copy(
                    update={
                        "daemon_state": "fenced",
                        "domain_state": "flushed",
                        "fence": FenceInfo(state="off", message=message),
                    }
                ),
            )
            self.d.state.clear_fault(f"fence-failed-{name}")
            if cfg.fencing.on_success == "migrate":
                self.recover(name, "fenced")
            if cfg.fencing.power_on_after and node_cfg is not None and node_cfg.ipmi is not None:
                try:
                    Bmc.from_config(node_cfg.ipmi, self.d.base_dir).power_on()
                except IpmiError as exc:
                    log.warning("could not power node %s back on: %s", name, exc)
            return True
        log.error("fencing node %s failed: %s", name, message)
        self._set_fence(name, FenceInfo(state="failed", message=message))
        self.d.state.raise_fault(
            f"fence-failed-{name}",
            "fence-failed",
            f"could not fence node {name}: {message}; its VMs stay assigned to it",
            node=name,
        )
        if cfg.fencing.on_failure == "migrate":
            self.recover(name, "fence failed, on_failure = migrate")
        return False

    def _set_fence(self, name: str, info: FenceInfo) -> None:
        self.d.state.update_node(name, lambda r: r.model_copy(update={"fence": info}))

    def recover(self, dead: str, why: str) -> None:
        """Restart elsewhere every VM that was running (or meant to run) on the dead node."""
        candidates = self.d.candidates()
        for spec in self.d.state.vms():
            status = self.d.state.vm_status(spec.uuid)
            on_dead = spec.node == dead and spec.state in RUNNING_STATES
            leaving_dead = spec.state == "migrate" and status.node == dead and spec.node != dead
            if not (on_dead or leaving_dead):
                continue
            for hook in self.before_restart:
                try:
                    hook(spec, dead)
                except Exception as exc:
                    log.error("VM %s: preparing its disks failed: %s", spec.name, exc)
            self.d.state.set_vm_status(spec.uuid, VmStatus(state="stopped", node=dead, reason=f"node {dead} {why}"))
            if leaving_dead:  # its new home starts it: hand the migration off for the dead source
                self._update(spec, _migrated)
                continue
            try:
                target = placement.choose(spec, candidates, self.d.cfg.migration.selector, exclude={dead})
            except placement.NoTarget as exc:
                log.error("VM %s from %s: %s; it stays stopped and starts when %s is ready", spec.name, dead, exc, dead)
                self._update(
                    spec,
                    lambda s: s.with_autostart(True).model_copy(update={"state": "stop"}),
                )
                continue
            log.warning("VM %s: restarting on %s (node %s %s)", spec.name, target, dead, why)
            self._update(spec, _restart_on(target, dead))

    def _update(self, spec: VmSpec, change: Callable[[VmSpec], VmSpec | None]) -> None:
        with contextlib.suppress(NotFound):
            self.d.state.update_vm(spec.uuid, change)


def _restart_on(target: str, dead: str) -> Callable[[VmSpec], VmSpec | None]:
    """The change that moves a VM still homed on the dead node to `target` and starts it there."""

    def change(s: VmSpec) -> VmSpec | None:
        return s.model_copy(update={"node": target, "last_node": dead, "state": "start"}) if s.node == dead else None

    return change


def _migrated(spec: VmSpec) -> VmSpec | None:
    new = handed_off("migrated", spec.state)
    return None if new is None else spec.model_copy(update={"state": new})
