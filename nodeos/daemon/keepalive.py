"""The keepalive: every interval, this node's resources and running VMs go to ZooKeeper.

The znode's mtime (ZooKeeper's clock) is what the primary's fencer compares, so the write must never wait on
libvirt: libvirtd answers nothing about any domain while one is starting or arriving (it holds the domain's lock
through QEMU's start-up), which took seconds on a loaded node and got a healthy node fenced. A sampler thread asks
libvirt; the keepalive sends its latest figures. If libvirt stops answering for `dead_after` intervals the keepalive
says so (`libvirt_ok = false`) and a fault is raised, but the node itself stays alive.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import libvirt

from pvc.nodeos.daemon import hostinfo
from pvc.nodeos.daemon.virt import VirtError
from pvc.nodeos.state.models import Keepalive, NodeRecord

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class VirtSample:
    """What libvirt said about this node's domains, and when (monotonic seconds)."""

    at: float
    ok: bool
    error: str = ""
    running: list[str] = field(default_factory=list)
    mem_allocated: int = 0
    vcpus_allocated: int = 0


class KeepaliveLoop:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.me = daemon.node.name
        self.last_mtime_ms = 0
        self.last_write = 0.0
        self.sample = VirtSample(at=time.monotonic(), ok=True)
        self.fault_raised = True  # so that the first good sample clears a fault left from before a restart
        self.sampler = threading.Thread(target=self._sample_loop, name="keepalive-libvirt", daemon=True)

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
        interval = self.d.cfg.timers.keepalive_interval
        while not self.d.stopping.is_set():
            started = time.monotonic()
            try:
                self.sample = self.measure_virt()
            except Exception as exc:  # this thread must outlive any surprise: a stale sample reads as "no answer"
                log.exception("libvirt sample failed")
                self.sample = VirtSample(at=time.monotonic(), ok=False, error=str(exc), running=self.sample.running)
            self.d.stopping.wait(max(0.0, interval - (time.monotonic() - started)))

    def measure_virt(self) -> VirtSample:
        try:
            running = self.d.virt.running()
        except (VirtError, libvirt.libvirtError) as exc:
            # libvirtd is down but this daemon is not: keep reporting (a keepalive is about the node, and its QEMU
            # processes live on without libvirtd), and say what is wrong.
            return VirtSample(at=time.monotonic(), ok=False, error=str(exc), running=self.sample.running)
        allocated = vcpus = 0
        for dom in running.values():
            with contextlib.suppress(libvirt.libvirtError):
                info = dom.info()
                allocated += info[1] // 1024
                vcpus += info[3]
        return VirtSample(
            at=time.monotonic(), ok=True, running=sorted(running), mem_allocated=allocated, vcpus_allocated=vcpus
        )

    def current_sample(self) -> VirtSample:
        """The latest sample; one older than `dead_after` intervals means libvirt stopped answering."""
        sample = self.sample
        timers = self.d.cfg.timers
        age = time.monotonic() - sample.at
        if sample.ok and age > timers.dead_after * timers.keepalive_interval:
            return VirtSample(
                at=sample.at, ok=False, error=f"libvirt has not answered for {age:.0f}s", running=sample.running
            )
        return sample

    def _report_libvirt(self, sample: VirtSample) -> None:
        if not sample.ok:  # raised again every keepalive: the fault's count and `last` say how long
            self.d.state.raise_fault(
                f"libvirt-{self.me}", "libvirt-down", f"node {self.me}: {sample.error}", node=self.me
            )
            self.fault_raised = True
        elif self.fault_raised:
            self.d.state.clear_fault(f"libvirt-{self.me}")
            self.fault_raised = False

    # -- the keepalive (the daemon's main loop) ------------------------------------------------------------------
    def measure(self) -> Keepalive:
        host = hostinfo.host()
        sample = self.current_sample()
        self._report_libvirt(sample)
        provisioned = sum(v.memory_mib for v in self.d.state.vms() if v.node == self.me)
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
        )

    def tick(self) -> None:
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
        self.d.log_ring.flush()
        took = self.last_write - started
        if took > self.d.cfg.timers.keepalive_interval / 2:
            log.warning("keepalive took %.1fs to write (ZooKeeper slow?)", took)
