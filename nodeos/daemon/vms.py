"""The VM controller: converge each VM's desired state (ZooKeeper) with libvirt on this node.

Triggers: a watch on the VM list and on each VM's spec, plus a periodic pass every keepalive interval (crash
restarts, drift, lost hand-offs). Work is queued per VM; one VM is never converged by two threads at once.

Who acts:
- the VM's home node (spec.node) starts, stops, shuts down, restarts it;
- during a migration (state `migrate`), the node it runs on sends it to the new home, then writes `start`;
- any other node running a copy destroys it: a VM runs only on its home node (or on the way there).

What a node starts is always `vmrender.render` of the VM's definition with this node's facts (`Host`), checked
once more before libvirt sees it (`domain_xml`): ZooKeeper's content is input too.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import queue
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kazoo.protocol.states import WatchedEvent, ZnodeStat

from pvc.nodeos.daemon import hotplug, migration
from pvc.nodeos.daemon.ceph_agent import DiskCheckFailed, DiskLocked
from pvc.nodeos.daemon.virt import MigrationTimeout, VirtError, VirtTimeout
from pvc.nodeos.daemon.watchdog import controller_thread
from pvc.nodeos.state.models import ObservedState, VmSpec, VmStatus
from pvc.nodeos.state.store import NotFound
from pvc.nodeos.state.vmimport import VmXmlError, import_xml
from pvc.nodeos.state.vmrender import Host, disk_xml, interface_xml, render
from pvc.nodeos.state.vmstate import STOPPED_STATES, HandOff, handed_off

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)
_DONE = {"attach": "plugged in", "update": "moved", "detach": "unplugged"}
LIVE_RETRY_SECONDS = 30.0  # a hot-plug that failed is tried again after this long


class Unstartable(Exception):
    """The VM's record does not describe a VM this node may start; the message says why."""


def domain_xml(spec: VmSpec, host: Host) -> str:
    """The domain XML that starts `spec` here: its definition rendered for `host`, and imported back through the
    allowlist to the same definition, so that nothing written into ZooKeeper by other means reaches libvirt."""
    d = spec.definition
    if d is None:
        why = "; ".join(f"{r.path}: {r.message}" for r in spec.refused) or "none is stored"
        raise Unstartable(f"it has no definition ({why}): define it again or modify it")
    if (d.name, d.uuid) != (spec.name, spec.uuid):
        raise Unstartable(f"its definition is of {d.name} ({d.uuid}), not of {spec.name} ({spec.uuid})")
    xml = render(d, host)
    try:
        back = import_xml(xml)
    except VmXmlError as exc:
        problems = "; ".join(f"{path}: {message}" for path, message in exc.problems)
        raise Unstartable(f"its rendered domain XML is refused: {problems}") from None
    if back != d:
        raise Unstartable("its rendered domain XML does not describe its definition")
    return xml


class VmController:
    def __init__(self, daemon: Daemon, workers: int = 4) -> None:
        self.d = daemon
        self.me = daemon.node.name
        self.queue: queue.Queue[str] = queue.Queue()
        self._pending: set[str] = set()
        self._busy: set[str] = set()
        self._mutex = threading.Lock()
        self._watched: set[str] = set()
        self.migrating_out: set[str] = set()
        self.arrivals = migration.Arrivals(daemon, lambda spec: self._hand_off(spec, "migrated"))
        self.workers = [controller_thread(f"vm-worker-{i}", functools.partial(self._work, i)) for i in range(workers)]
        self.periodic = controller_thread("vm-periodic", self._periodic)
        self.console_dir = Path(daemon.opts.state_dir) / "console"
        # VM -> ((definition, live XML), plugged-in MACs, plugged-in volumes, pending changes, when to look again):
        # the last live comparison (_apply_live)
        self._live: dict[str, tuple[tuple[str, str], list[str], list[str], list[str], float]] = {}
        self.console_dir.mkdir(parents=True, exist_ok=True)

    # -- scheduling -----------------------------------------------------------------------------------------
    def start(self) -> None:
        for w in self.workers:
            w.start()
        self.d.state.watch_vm_list(self._on_children)
        self.periodic.start()

    def _periodic(self) -> None:
        while not self.d.stopping.wait(self.d.cfg.timers.keepalive_interval):
            self.d.progress.beat("vm-periodic", allow=60)  # one libvirt call, within its deadline
            if self.d.keepalive.libvirt_ok:  # while libvirtd is down, the keepalive's fault says so
                self.kick_all()

    def _on_children(self, children: list[str]) -> bool:
        for vm_uuid in children:
            if vm_uuid not in self._watched:
                self._watched.add(vm_uuid)
                self.d.state.watch_vm(vm_uuid, self._data_watcher(vm_uuid))
            self.kick(vm_uuid)
        return not self.d.stopping.is_set()

    def _data_watcher(self, vm_uuid: str) -> Callable[..., bool]:
        def on_change(data: bytes | None, stat: ZnodeStat | None, event: WatchedEvent | None = None) -> bool:
            self.kick(vm_uuid)
            if stat is None:  # deleted: stop watching
                self._watched.discard(vm_uuid)
                return False
            return not self.d.stopping.is_set()

        return on_change

    def kick(self, vm_uuid: str) -> None:
        with self._mutex:
            if vm_uuid in self._pending:
                return
            self._pending.add(vm_uuid)
        self.queue.put(vm_uuid)

    def kick_all(self) -> None:
        """The periodic pass: every VM in ZooKeeper and every domain running here."""
        try:
            uuids = set(self.d.state.vm_uuids()) | set(self.d.virt.active_uuids())
        except Exception as exc:
            log.warning("periodic pass skipped: %s", exc)
            return
        for vm_uuid in uuids:
            self.kick(vm_uuid)

    def _work(self, index: int) -> None:
        name = f"vm-worker-{index}"
        cfg = self.d.cfg
        # a VM's longest step: a shutdown (then destroy), or a live migration and then a shutdown migration
        longest = cfg.timers.vm_shutdown_timeout + cfg.migration.timeout + 120
        while not self.d.stopping.is_set():
            self.d.progress.beat(name, allow=longest)
            try:
                vm_uuid = self.queue.get(timeout=0.5)
            except queue.Empty:
                continue
            with self._mutex:
                self._pending.discard(vm_uuid)
                if vm_uuid in self._busy:  # another worker has it: try again shortly
                    self._pending.add(vm_uuid)
                    threading.Timer(0.2, self.queue.put, (vm_uuid,)).start()
                    continue
                self._busy.add(vm_uuid)
            try:
                self.converge(vm_uuid)
            except Exception:
                log.exception("converging VM %s failed", vm_uuid)
            finally:
                with self._mutex:
                    self._busy.discard(vm_uuid)

    # -- convergence ----------------------------------------------------------------------------------------
    def converge(self, vm_uuid: str) -> None:
        try:
            spec = self.d.state.vm(vm_uuid)
        except NotFound:
            spec = None
        try:
            here = vm_uuid in self.d.virt.active_uuids()
        except VirtError as exc:  # libvirt does not answer: say so where the VM's owner looks
            if spec is not None and spec.node == self.me:
                current = self.d.state.vm_status(vm_uuid)
                self._set_status(spec, current.state, f"waiting for libvirt: {exc}", node=current.node)
            raise
        if not here:
            self._live.pop(vm_uuid, None)
        if spec is None:
            # Not (or no longer) a PVC VM: a domain someone started by hand is theirs, not ours to stop.
            # (A PVC VM can only be removed once it is stopped.)
            return
        if spec.node == self.me:
            self._converge_home(spec, here)
        elif here:
            if spec.state == "migrate" and vm_uuid not in self.migrating_out:
                self._migrate_out(spec)
            elif vm_uuid not in self.migrating_out:
                log.warning("VM %s runs here but belongs to %s: destroying this copy", spec.name, spec.node)
                self.d.virt.destroy(vm_uuid)

    def _converge_home(self, spec: VmSpec, here: bool) -> None:
        state = spec.state
        if state == "start":
            if here:
                nics, volumes, pending = self._apply_live(spec)
                self._set_status(spec, "running", nics=nics, volumes=volumes, pending=pending)
            else:
                self._start(spec)
        elif state == "restart":
            if here:
                self._set_status(spec, "stopping", "restarting")
                self.d.virt.shutdown(spec.uuid, self.d.cfg.timers.vm_shutdown_timeout, self.d.stopping)
            self._hand_off(spec, "restarted")
        elif state == "shutdown":
            if here:
                self._set_status(spec, "stopping", "shutting down")
                self.d.virt.shutdown(spec.uuid, self.d.cfg.timers.vm_shutdown_timeout, self.d.stopping)
            self._set_status(spec, "stopped")
            self._hand_off(spec, "shut_down")
        elif state in STOPPED_STATES:
            if here:
                self.d.virt.destroy(spec.uuid)
            if state != "fail":
                self._set_status(spec, "stopped")
        elif state == "migrate":
            self.arrivals.check(spec, here)  # the source did not finish it (migration.py)

    def _start(self, spec: VmSpec) -> None:
        status = self.d.state.vm_status(spec.uuid)
        if status.state in ("running", "migrating") and status.node not in (None, self.me):
            other = status.node
            other_state: str
            try:
                other_state = self.d.state.node(other).daemon_state
            except NotFound:
                other_state = "gone"
            if other_state in ("init", "run"):
                log.info("VM %s: not starting, %s reports it %s", spec.name, other, status.state)
                return
        try:
            xml = domain_xml(spec, self.host(spec))
            self._check_networks(spec)
        except Unstartable as exc:
            log.error("VM %s cannot start: %s", spec.name, exc)
            self._set_status(spec, "failed", f"refused: {exc}")
            self._hand_off(spec, "start_failed")
            return
        log.info("starting VM %s", spec.name)
        self._set_status(spec, "starting")
        try:
            self.d.storage.check_disks(spec)
            self.d.virt.start(xml)
        except VirtTimeout as exc:  # what libvirt did is unknown: the next pass looks again
            log.warning("VM %s: %s; trying again", spec.name, exc)
            self._set_status(spec, "starting", f"{exc}; trying again")
            return
        except DiskCheckFailed as exc:  # fail closed, and try again on the next pass: still starting, not failed
            log.warning("VM %s not started: %s", spec.name, exc)
            self._set_status(spec, "starting", f"{exc}; trying again")
            return
        except (VirtError, DiskLocked) as exc:
            log.error("VM %s failed to start: %s", spec.name, exc)
            self._set_status(spec, "failed", f"start failed: {exc}")
            self._hand_off(spec, "start_failed")
            return
        self._set_status(spec, "running")

    def _check_networks(self, spec: VmSpec) -> None:
        """Every NIC's network exists in the cluster and its bridge on this node (Unstartable: which and why)."""
        nics = spec.definition.nics if spec.definition else []
        if not nics:
            return
        known = set(self.d.state.network_vnis())
        for nic in nics:
            if nic.network not in known:
                raise Unstartable(
                    f"its NIC {nic.mac} is on network {nic.network}, which does not exist: create the network "
                    f"(pvc network add) or remove the NIC (pvc vm network remove {spec.name} {nic.network})"
                )
        for vni, why in self.d.networks.bridges_ready({n.network for n in nics}).items():
            raise Unstartable(f"network {vni} is not ready on {self.me}: {why}")

    def _apply_live(self, spec: VmSpec) -> tuple[list[str], list[str], list[str]]:
        """Bring a running domain's NICs (hot-plug, unplug, or a new bridge) and RBD disks (hot-plug, unplug) to
        its definition, and say what else waits for the next start. Returns (the MACs plugged in, the volumes
        plugged in, the pending changes). Worked out again only when the definition or the live domain changed."""
        d = spec.definition
        try:
            xml = self.d.virt.xml(spec.uuid)
        except VirtError as exc:
            log.warning("VM %s: cannot read its live domain: %s", spec.name, exc)
            return [], [], []
        if d is None or xml is None:
            return [], [], []
        key = (d.model_dump_json(), xml)
        cached = self._live.get(spec.uuid)
        if cached is not None and cached[0] == key and time.monotonic() < cached[4]:
            return cached[1], cached[2], cached[3]
        plan = hotplug.nic_plan(hotplug.live_nics(xml), d.nics)
        disks = hotplug.disk_plan(xml, d.disks)
        failed: list[str] = []
        if not plan.empty:
            failed = self._hotplug(spec, plan)
        if not disks.empty:
            failed += self._hotplug_disks(spec, disks)
        if not (plan.empty and disks.empty):
            xml = self.d.virt.xml(spec.uuid) or xml
        live = hotplug.live_nics(xml)
        wanted = {n.mac for n in d.nics}
        pending = [*plan.pending, *failed]
        pending += [
            f"NIC {n.mac}: removed from the definition; waiting for the guest to release it (or the next start)"
            for n in live
            if n.mac not in wanted and not any(n.mac in line for line in failed)
        ]
        pending += [
            f"disk {x.volume}: removed from the definition; waiting for the guest to release it (or the next start)"
            for x in hotplug.live_disks(xml)
            if x.volume not in d.volumes and not any(x.volume in line for line in failed)
        ]
        try:
            pending += hotplug.pending_fields(hotplug.running_definition(xml), d)
        except VmXmlError as exc:
            log.warning("VM %s: its live domain XML does not import (%s)", spec.name, exc)
        nics = [n.mac for n in live]
        volumes = [x.volume for x in hotplug.live_disks(xml)]
        retry = time.monotonic() + (LIVE_RETRY_SECONDS if failed else float("inf"))  # a failed hot-plug is retried
        self._live[spec.uuid] = ((d.model_dump_json(), xml), nics, volumes, pending, retry)
        return nics, volumes, pending

    def _hotplug(self, spec: VmSpec, plan: hotplug.Plan) -> list[str]:
        """Apply a NIC plan to the running domain; what failed, one line per NIC (it waits for the next start)."""
        failed = []
        steps: list[tuple[str, str, int | None, str]]
        steps = [("attach", nic.mac or "", nic.network, interface_xml(nic)) for nic in plan.attach]
        steps += [("update", nic.mac or "", nic.network, interface_xml(nic)) for nic in plan.move]
        steps += [("detach", n.mac, n.network, hotplug.detach_xml(n)) for n in plan.detach]
        for action, mac, network, xml in steps:
            if action != "detach" and network is not None:
                problems = self.d.networks.bridges_ready({network})
                if problems:
                    failed.append(f"NIC {mac}: not plugged in: network {network}: {problems[network]}")
                    continue
            try:
                self.d.virt.device(spec.uuid, action, xml)
                log.info("VM %s: %s NIC %s (network %s)", spec.name, _DONE[action], mac, network)
            except VirtError as exc:
                log.error("VM %s: %s of NIC %s failed: %s", spec.name, action, mac, exc)
                failed.append(f"NIC {mac}: {action} failed ({exc}); it applies at the next start")
        return failed

    def _hotplug_disks(self, spec: VmSpec, plan: hotplug.DiskPlan) -> list[str]:
        """Apply a disk plan to the running domain; what failed, one line per volume (it waits for the next start).
        A volume locked by a live client (another QEMU) is not plugged in."""
        failed = []
        host = self.host(spec)
        if plan.scsi_controller:
            try:
                self.d.virt.device(spec.uuid, "attach", hotplug.SCSI_CONTROLLER_XML)
            except VirtError as exc:
                log.error("VM %s: attaching a virtio-scsi controller failed: %s", spec.name, exc)
        for disk, target in plan.attach:
            try:
                self.d.storage.check_volumes([disk.volume])
                self.d.virt.device(spec.uuid, "attach", disk_xml(disk, target, host))
                log.info("VM %s: plugged in disk %s as %s", spec.name, disk.volume, target)
            except (DiskLocked, DiskCheckFailed) as exc:
                failed.append(f"disk {disk.volume}: not plugged in: {exc}; it applies at the next start")
            except VirtError as exc:
                log.error("VM %s: attach of disk %s failed: %s", spec.name, disk.volume, exc)
                failed.append(f"disk {disk.volume}: attach failed ({exc}); it applies at the next start")
        for live in plan.detach:
            try:
                self.d.virt.device(spec.uuid, "detach", live.xml)
                log.info("VM %s: unplugged disk %s (%s)", spec.name, live.volume, live.target)
            except VirtError as exc:
                log.error("VM %s: detach of disk %s failed: %s", spec.name, live.volume, exc)
                failed.append(f"disk {live.volume}: detach failed ({exc}); it goes at the next start")
        return failed

    def host(self, spec: VmSpec) -> Host:
        """What this node puts into a VM's domain XML: its accelerator, Ceph's monitors and the client.libvirt
        secret (defined on first need), and the file QEMU logs the VM's serial console to."""
        disks = bool(spec.definition and spec.definition.disks)
        return Host(
            accelerator=self.d.accelerator,
            ceph_monitors=tuple(self.d.storage.mons()),
            ceph_secret_uuid=self.d.storage.ceph_secret() if disks else (self.d.storage.secret_uuid or ""),
            console_log=str(self.console_dir / f"{spec.uuid}.log"),
        )

    def _migrate_out(self, spec: VmSpec) -> None:
        """Send a VM that runs here to its new home, live if possible, else by shutting it down."""
        target = spec.node
        method = spec.migration.method or self.d.cfg.migration.method
        downtime = spec.migration.max_downtime_ms or self.d.cfg.migration.max_downtime_ms
        timeout = migration.timeout_s(spec, self.d.cfg)
        # this worker's step: the migration to its deadline, then perhaps a shutdown migration
        self.d.progress.beat(
            threading.current_thread().name, allow=timeout + self.d.cfg.timers.vm_shutdown_timeout + 120
        )
        self.migrating_out.add(spec.uuid)
        try:
            self._set_status(spec, "migrating", f"to {target}", node=self.me)
            error, aborted = "", False
            if method in ("live", "live-only"):
                try:
                    uri = self.d.migration_uri(target)
                    log.info("live-migrating VM %s to %s (%s)", spec.name, target, uri)
                    started = time.monotonic()
                    self.d.virt.migrate(spec.uuid, uri, downtime, timeout, self.d.cfg.migration.bandwidth_mib)
                    self._hand_off(spec, "migrated")
                    log.info("VM %s is now on %s", spec.name, target)
                    self.d.state.clear_fault(f"migration-{spec.uuid}")
                    self._task(spec, "succeeded", f"live-migrated to {target} in {time.monotonic() - started:.1f}s")
                    return
                except (VirtError, KeyError) as exc:
                    error, aborted = str(exc), isinstance(exc, MigrationTimeout)
                    log.warning("live migration of %s to %s failed: %s", spec.name, target, error)
                why_not = self._no_shutdown_migration(spec, target) if method == "live" else "it is a live-only VM"
                if why_not:
                    self._stay(spec, target, error, why_not, aborted)
                    return
            log.info("shutdown migration of VM %s to %s", spec.name, target)
            self.d.virt.shutdown(spec.uuid, self.d.cfg.timers.vm_shutdown_timeout, self.d.stopping)
            self._set_status(spec, "stopped", f"shut down to move to {target}", node=self.me)
            self._hand_off(spec, "migrated")
            why = f" (live migration failed: {error})" if error else ""
            self._task(spec, "succeeded", f"moved to {target} by shutting it down and starting it there{why}")
        finally:
            self.migrating_out.discard(spec.uuid)

    def _no_shutdown_migration(self, spec: VmSpec, target: str) -> str:
        """Why a failed live migration must not fall back to shutting the VM down to start it on `target` ('' when
        it may): the target would not start it now."""
        return migration.no_fallback(self.d, spec, target)

    def _stay(self, spec: VmSpec, target: str, error: str, why: str, aborted: bool) -> None:
        """A live migration failed and may not fall back: the VM stays here, a fault and the task say why."""
        message = f"live migration to {target} {'' if aborted else 'failed: '}{error}; it stays on {self.me} ({why})"
        self._revert_migration(spec, message)
        self.d.state.raise_fault(f"migration-{spec.uuid}", "migration-failed", f"VM {spec.name}: {message}")
        self._task(spec, "failed", message)

    def _revert_migration(self, spec: VmSpec, reason: str) -> None:
        def back(s: VmSpec) -> VmSpec | None:
            if s.state != "migrate" or s.node != spec.node:
                return None
            last = None if s.last_node == self.me else s.last_node
            return s.model_copy(update={"node": self.me, "last_node": last, "state": "start"})

        self.d.state.update_vm(spec.uuid, back)
        self._set_status(spec, "running", reason, node=self.me)

    # -- helpers --------------------------------------------------------------------------------------------
    def _task(self, spec: VmSpec, state: str, message: str) -> None:
        if spec.task:
            with contextlib.suppress(NotFound):
                self.d.state.update_task(spec.task, state=state, progress=1, message=message)

    def _hand_off(self, spec: VmSpec, event: HandOff) -> None:
        """Move the desired state on (vmstate.HANDOFFS) unless someone changed it meanwhile."""

        def step(s: VmSpec) -> VmSpec | None:
            new = handed_off(event, s.state)
            if new is None or s.node != spec.node:
                return None
            return s.model_copy(update={"state": new})

        with contextlib.suppress(NotFound):
            self.d.state.update_vm(spec.uuid, step)

    def _set_status(
        self,
        spec: VmSpec,
        state: ObservedState,
        reason: str = "",
        node: str | None = None,
        nics: list[str] | None = None,
        pending: list[str] | None = None,
        volumes: list[str] | None = None,
    ) -> None:
        current = self.d.state.vm_status(spec.uuid)
        new = VmStatus(
            state=state,
            node=node or self.me,
            reason=reason,
            nics=nics or [],
            volumes=volumes or [],
            pending=pending or [],
        )
        if current.model_copy(update={"updated": new.updated}) == new:
            return
        self.d.state.set_vm_status(spec.uuid, new)
