"""Migration rules of the VM controller (vms.py): a live migration's deadline and bandwidth, whether its fallback may
shut the VM down (only when the target can start it), and the target's side of a migration its source does not
finish.

A VM never stays in `migrate` once both daemons run: the source writes `start` when libvirt is done, or reverts the
VM to itself when the migration failed; should that write be lost (its pvcd restarted, or ZooKeeper failed it), the
target finishes it from what it sees, without asking whether the source's daemon runs:
- the domain's CPUs run here (libvirt resumes an incoming domain only after the source stopped its copy) and the
  source no longer runs it — by its keepalive, fresh and with libvirt answering, or else by asking its libvirtd
  (a source whose pvcd is stalled) — or the source's daemon is gone (dead, stopped, fenced): the migration is done;
- the domain is on neither node: it is started here, as if it had crashed;
each only once it has held for two keepalive intervals (the source's own write normally comes first).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pvc.config.schema import ClusterFile
from pvc.nodeos.state.models import VmSpec
from pvc.nodeos.state.store import ClusterState, NotFound

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)
PROBE_TIMEOUT = 2.0  # seconds the source's libvirtd has to answer


def timeout_s(spec: VmSpec, cfg: ClusterFile) -> int:
    """Seconds the VM's live migration may take: its own setting, else cluster.toml's `[migration] timeout`."""
    return spec.migration.timeout_s or cfg.migration.timeout


def keepalive_view(state: ClusterState, node: str, now_ms: int, limit_ms: int) -> tuple[set[str] | None, str]:
    """What `node`'s keepalive says runs there, if its daemon runs and its keepalive is fresh (at most `limit_ms`
    old on ZooKeeper's clock) with libvirt answering; else (None, why not)."""
    try:
        daemon_state = state.node(node).daemon_state
    except NotFound:
        return None, f"{node} is not a node"
    if daemon_state != "run":
        return None, f"{node}'s daemon is {daemon_state}"
    found = state.keepalive(node)
    if found is None:
        return None, f"{node} has sent no keepalive"
    keepalive, mtime = found
    if now_ms - mtime > limit_ms:
        return None, f"{node}'s last keepalive is {(now_ms - mtime) / 1000:.0f}s old"
    if not keepalive.libvirt_ok:
        return None, f"libvirt on {node} is not answering"
    return set(keepalive.running), ""


def no_fallback(daemon: Daemon, spec: VmSpec, target: str) -> str:
    """Why a failed live migration must not fall back to a shutdown migration ('' when it may): the target would
    not start the VM now (its daemon, keepalive or libvirt is not well), or it still holds a copy of it (the
    aborted incoming domain, which its libvirt has not cleaned up yet)."""
    timers = daemon.cfg.timers
    running, why = keepalive_view(
        daemon.state, target, daemon.keepalive.zk_now_ms(), timers.dead_after * timers.keepalive_interval * 1000
    )
    if running is None:
        return why
    try:
        there = daemon.virt.remote_domains(daemon.migration_uri(target), PROBE_TIMEOUT)
    except KeyError:
        there = None
    if there is None:
        return f"libvirt on {target} did not answer"
    if spec.uuid in there:
        return f"{target} still holds the aborted incoming copy"
    return ""


class Arrivals:
    """The target's side of migrations whose source does not finish them (see above)."""

    def __init__(self, daemon: Daemon, hand_off: Callable[[VmSpec], None]) -> None:
        self.d = daemon
        self.me = daemon.node.name
        self.hand_off = hand_off  # writes `start` over `migrate` (vms.VmController._hand_off "migrated")
        self.since: dict[str, float] = {}  # VM -> when what would finish it was first seen (monotonic)

    def _held(self, vm_uuid: str, holds: bool) -> bool:
        if not holds:
            self.since.pop(vm_uuid, None)
            return False
        first = self.since.setdefault(vm_uuid, time.monotonic())
        return time.monotonic() - first >= 2 * self.d.cfg.timers.keepalive_interval

    def check(self, spec: VmSpec, here: bool) -> bool:
        """Finish the migration of `spec` (state `migrate`, this node its new home) if its source did not; returns
        whether it did."""
        source = self.d.state.vm_status(spec.uuid).node  # the source writes `migrating` with its name
        if source in (None, self.me):
            self.since.pop(spec.uuid, None)
            return False
        timers = self.d.cfg.timers
        running, _why = keepalive_view(
            self.d.state, source, self.d.keepalive.zk_now_ms(), timers.dead_after * timers.keepalive_interval * 1000
        )
        try:
            source_up = self.d.state.node(source).daemon_state in ("init", "run")
        except NotFound:
            source_up = False
        if running is None and source_up:  # no fresh keepalive: ask the source's libvirtd itself
            with contextlib.suppress(KeyError):
                running = self.d.virt.remote_domains(self.d.migration_uri(source), PROBE_TIMEOUT)
        let_go = running is not None and spec.uuid not in running
        if here and self.d.virt.cpus_running(spec.uuid):
            # arrived: done once the source's daemon is gone (dead, stopped, fenced) or its keepalive lets go of it
            if not source_up or self._held(spec.uuid, let_go):
                log.info(
                    "VM %s arrived from %s, which did not finish the migration: finishing it here", spec.name, source
                )
                self._finish(spec, f"live-migrated to {self.me}")
                return True
        elif not here and self._held(spec.uuid, let_go):
            log.warning("VM %s runs neither on %s nor here after its migration: starting it here", spec.name, source)
            self._finish(spec, f"moved to {self.me}: it ran on neither node after the migration, and started here")
            return True
        return False

    def _finish(self, spec: VmSpec, message: str) -> None:
        self.since.pop(spec.uuid, None)
        self.hand_off(spec)
        if spec.task:  # the source's own message, with the time it took, stays if it came first
            with contextlib.suppress(NotFound):
                self.d.state.finish_task(spec.task, "succeeded", message)
