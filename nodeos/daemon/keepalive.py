"""The keepalive: every interval, this node's resources and running VMs go to ZooKeeper.

The znode's mtime (ZooKeeper's clock) is what the primary's fencer compares, so the write must never wait on
libvirt: libvirtd answers nothing about any domain while one is starting or arriving (it holds the domain's lock
through QEMU's start-up), which took seconds on a loaded node and got a healthy node fenced. A sampler thread asks
libvirt; the keepalive sends its latest figures. If libvirt stops answering for `dead_after` intervals the keepalive
says so (`libvirt_ok = false`) and a fault is raised, but the node itself stays alive; after
`timers.libvirt_restart_after` seconds of that, the sampler restarts libvirtd (its QEMU processes live on).

The keepalive also reports how full PVCDATA and the root file system (the RAM overlay) are, with a fault above 80 %.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from pvc.nodeos.daemon import hostinfo
from pvc.nodeos.daemon.virt import CALL_TIMEOUT, VirtError
from pvc.nodeos.daemon.watchdog import controller_thread
from pvc.nodeos.state.models import Keepalive, NodeRecord

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)
DISK_FULL_PCT = 80.0
RESTART_TIMEOUT = 90  # seconds the libvirtd restart command may take


@dataclass(frozen=True)
class VirtSample:
    """What libvirt said about this node's domains, and when (monotonic seconds)."""

    at: float
    ok: bool
    error: str = ""
    running: list[str] = field(default_factory=list)
    mem_allocated: int = 0
    vcpus_allocated: int = 0


def disk_used(paths: tuple[str, ...]) -> dict[str, float]:
    """Percent used of each file system in `paths` that exists (as df counts it: of what non-root users may use)."""
    out = {}
    for path in paths:
        try:
            st = os.statvfs(path)
        except OSError:
            continue
        usable = st.f_blocks - st.f_bfree + st.f_bavail
        if usable > 0:
            out[path] = round(100.0 * (st.f_blocks - st.f_bfree) / usable, 1)
    return out


class KeepaliveLoop:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.me = daemon.node.name
        self.last_mtime_ms = 0
        self.last_write = 0.0
        self.sample = VirtSample(at=time.monotonic(), ok=True)
        self.fault_raised = True  # so that the first good sample clears a fault left from before a restart
        self.disk_faults: set[str] | None = None  # fault ids raised; None: not known yet (after a restart)
        self.last_good = time.monotonic()  # when libvirt last answered a sample
        self.libvirt_restarted = 0.0
        self.sampler = controller_thread("keepalive-virt", self._sample_loop)

    @property
    def libvirt_ok(self) -> bool:
        return self.sample.ok

    def zk_now_ms(self) -> int:
        """ZooKeeper's clock now, extrapolated from our last keepalive write."""
        return int(self.last_mtime_ms + (time.monotonic() - self.last_write) * 1000)

    # -- the libvirt side (its own thread) -----------------------------------------------------------------------
    def start(self) -> None:
        self.sampler.start()

    def _sample_loop(self) -> None:
        timers = self.d.cfg.timers
        # a call that takes longer than this counts as no answer (and the next sample asks again)
        deadline = timers.dead_after * timers.keepalive_interval
        while not self.d.stopping.is_set():
            started = time.monotonic()
            self.d.progress.beat("keepalive-virt", allow=deadline + CALL_TIMEOUT)
            try:
                self.sample = self.measure_virt(deadline)
            except Exception as exc:  # this thread must outlive any surprise: a stale sample reads as "no answer"
                log.exception("libvirt sample failed")
                self.sample = VirtSample(at=time.monotonic(), ok=False, error=str(exc), running=self.sample.running)
            if self.sample.ok:
                self.last_good = self.sample.at
            self._restart_hung_libvirt()
            self.d.stopping.wait(max(0.0, timers.keepalive_interval - (time.monotonic() - started)))

    def measure_virt(self, timeout: float = CALL_TIMEOUT) -> VirtSample:
        try:
            domains = self.d.virt.domains(timeout)
        except VirtError as exc:
            # libvirtd is down but this daemon is not: keep reporting (a keepalive is about the node, and its QEMU
            # processes live on without libvirtd), and say what is wrong.
            return VirtSample(at=time.monotonic(), ok=False, error=str(exc), running=self.sample.running)
        return VirtSample(
            at=time.monotonic(),
            ok=True,
            running=domains.running,
            mem_allocated=domains.mem_allocated,
            vcpus_allocated=domains.vcpus_allocated,
        )

    def current_sample(self) -> VirtSample:
        """The latest sample, unless libvirt has not answered: its last sample failed, or its last good answer is
        older than `dead_after` intervals (a sample still waiting)."""
        sample = self.sample
        timers = self.d.cfg.timers
        silent = time.monotonic() - self.last_good
        if sample.ok and silent <= timers.dead_after * timers.keepalive_interval:
            return sample
        error = f"libvirt has not answered for {silent:.0f}s" + (f" ({sample.error})" if sample.error else "")
        if self.libvirt_restarted > self.last_good:
            error += f"; pvcd restarted libvirtd {time.monotonic() - self.libvirt_restarted:.0f}s ago"
        return VirtSample(at=sample.at, ok=False, error=error, running=sample.running)

    def _restart_hung_libvirt(self) -> None:
        """After `libvirt_restart_after` seconds without a good answer, restart libvirtd (then wait as long again
        before the next restart)."""
        after = self.d.cfg.timers.libvirt_restart_after
        now = time.monotonic()
        if not after or now - max(self.last_good, self.libvirt_restarted) < after:
            return
        sample = self.current_sample()
        command = self.d.opts.libvirt_restart
        log.error("%s: restarting it (%s)", sample.error, shlex.join(command))
        self.d.progress.beat("keepalive-virt", allow=RESTART_TIMEOUT + CALL_TIMEOUT)
        self.libvirt_restarted = now
        try:
            out = subprocess.run(command, capture_output=True, text=True, timeout=RESTART_TIMEOUT)
            result = "done" if out.returncode == 0 else f"failed: {(out.stderr or out.stdout).strip()[-200:]}"
        except (OSError, subprocess.TimeoutExpired) as exc:
            result = f"failed: {exc}"
        log.warning("restarting libvirtd: %s", result)  # the fault says so from now on (current_sample)
        # and a fault of its own, which stays until an administrator clears or acknowledges it: a restart that
        # helped at once would otherwise leave no trace (libvirt-<node> clears with the next good answer)
        try:
            self.d.state.raise_fault(
                f"libvirt-restarted-{self.me}",
                "libvirt-restarted",
                f"node {self.me}: pvcd restarted libvirtd ({result}) after {now - self.last_good:.0f}s without an "
                "answer; clear this with `pvc cluster fault delete` once seen",
                node=self.me,
            )
        except Exception:  # ZooKeeper away: the log says it, and libvirt-<node> carries the note meanwhile
            log.exception("cannot record the libvirtd restart as a fault")

    def _report_libvirt(self, sample: VirtSample) -> None:
        if not sample.ok:  # raised again every keepalive: the fault's count and `last` say how long
            self.d.state.raise_fault(
                f"libvirt-{self.me}", "libvirt-down", f"node {self.me}: {sample.error}", node=self.me
            )
            self.fault_raised = True
        elif self.fault_raised:
            self.d.state.clear_fault(f"libvirt-{self.me}")
            self.fault_raised = False

    def _report_disks(self, used: dict[str, float]) -> None:
        full = {_disk_fault(self.me, path): (path, pct) for path, pct in used.items() if pct >= DISK_FULL_PCT}
        for fault_id, (path, pct) in sorted(full.items()):
            self.d.state.raise_fault(
                fault_id,
                "disk-full",
                f"node {self.me}: {path} is {pct:.0f}% full (PVCDATA holds ZooKeeper, the Ceph monitor and "
                "PostgreSQL; / is the RAM overlay)",
                node=self.me,
            )
        raised = self.disk_faults
        if raised is None:  # the first report since pvcd started: faults a previous run left
            raised = {f.id for f in self.d.state.faults() if f.kind == "disk-full" and f.node == self.me}
        for fault_id in raised - set(full):
            self.d.state.clear_fault(fault_id)
        self.disk_faults = set(full)

    # -- the keepalive (the daemon's main loop) ------------------------------------------------------------------
    def measure(self) -> Keepalive:
        host = hostinfo.host()
        sample = self.current_sample()
        provisioned = sum(v.memory_mib for v, _status in self.d.vm_cache.snapshot()[1] if v.node == self.me)
        return Keepalive(
            mem_total=int(host["mem_total"]),
            mem_used=int(host["mem_used"]),
            mem_free=int(host["mem_free"]),
            mem_allocated=sample.mem_allocated,
            mem_provisioned=provisioned,
            cpus=int(host["cpus"]),
            vcpus_allocated=sample.vcpus_allocated,
            load=host["load"],
            running=sample.running,
            libvirt_ok=sample.ok,
            accelerator=self.d.accelerator,
            disk_used_pct=disk_used(self.d.opts.disks),
        )

    def tick(self) -> None:
        if not self.d.zk.connected:
            # a write now would wait (queued by kazoo) until ZooKeeper is back: the main loop must not
            return
        started = time.monotonic()
        record = self.measure()
        mtime = self.d.state.write_keepalive(self.me, record)
        self.last_mtime_ms, self.last_write = mtime, time.monotonic()
        with contextlib.suppress(Exception):  # the keepalive itself is written; the next tick tries again
            self.d.state.mark_alive(self.me)

        def alive(r: NodeRecord) -> NodeRecord | None:
            if r.daemon_state == "run" or self.d.stopping.is_set():
                return None
            return r.model_copy(update={"daemon_state": "run"})

        self.d.state.update_node(self.me, alive)
        self._report_libvirt(self.current_sample())
        self._report_disks(record.disk_used_pct)
        self.d.log_ring.flush()
        took = self.last_write - started
        if took > self.d.cfg.timers.keepalive_interval / 2:
            log.warning("keepalive took %.1fs to write (ZooKeeper slow?)", took)


def _disk_fault(node: str, path: str) -> str:
    return f"disk-full-{node}-{path.strip('/').replace('/', '-') or 'root'}"
