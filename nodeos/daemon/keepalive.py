"""The keepalive: every interval, this node's resources and running VMs go to ZooKeeper.

The znode's mtime (ZooKeeper's clock) is what the primary's fencer compares; the loop also kicks the periodic
VM pass, flushes the node log ring, and sets the daemon state to `run`.
"""

from __future__ import annotations

import contextlib
import logging
import time
from typing import TYPE_CHECKING

import libvirt

from pvc.nodeos.daemon import resources
from pvc.nodeos.daemon.virt import VirtError
from pvc.nodeos.state import layout
from pvc.nodeos.state.models import Keepalive, NodeRecord

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)


class KeepaliveLoop:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.me = daemon.node.name
        self.last_mtime_ms = 0
        self.last_write = 0.0
        self.last_running: list[str] = []
        self.libvirt_ok = True

    def zk_now_ms(self) -> int:
        """ZooKeeper's clock now, extrapolated from our last keepalive write."""
        return int(self.last_mtime_ms + (time.monotonic() - self.last_write) * 1000)

    def measure(self) -> Keepalive:
        host = resources.host()
        allocated = vcpus = 0
        try:
            running = self.d.virt.running()
        except VirtError as exc:
            # libvirtd is down but this daemon is not: keep reporting (a keepalive is about the node, and its QEMU
            # processes live on without libvirtd), and say what is wrong.
            self.d.state.raise_fault(f"libvirt-{self.me}", "libvirt-down", f"node {self.me}: {exc}", node=self.me)
            self.libvirt_ok = False
            return Keepalive(
                mem_total=int(host["mem_total"]),
                mem_used=int(host["mem_used"]),
                mem_free=int(host["mem_free"]),
                cpus=int(host["cpus"]),
                load=host["load"],
                running=self.last_running,
                libvirt_ok=False,
            )
        if not self.libvirt_ok:
            self.d.state.clear_fault(f"libvirt-{self.me}")
            self.libvirt_ok = True
        self.last_running = sorted(running)
        for dom in running.values():
            with contextlib.suppress(libvirt.libvirtError):
                info = dom.info()
                allocated += info[1] // 1024
                vcpus += info[3]
        provisioned = sum(v.memory_mib for v in self.d.state.vms() if v.node == self.me)
        return Keepalive(
            mem_total=int(host["mem_total"]),
            mem_used=int(host["mem_used"]),
            mem_free=int(host["mem_free"]),
            mem_allocated=allocated,
            mem_provisioned=provisioned,
            cpus=int(host["cpus"]),
            vcpus_allocated=vcpus,
            load=host["load"],
            running=sorted(running),
        )

    def tick(self) -> None:
        record = self.measure()
        mtime = self.d.state.write_keepalive(self.me, record)
        self.last_mtime_ms, self.last_write = mtime, time.monotonic()
        if not self.d.zk.exists(layout.node_alive(self.me)):
            with contextlib.suppress(Exception):
                self.d.zk.create(layout.node_alive(self.me), b"", ephemeral=True, makepath=True)

        def alive(r: NodeRecord) -> NodeRecord | None:
            if r.daemon_state == "run" or self.d.stopping.is_set():
                return None
            return r.model_copy(update={"daemon_state": "run"})

        self.d.state.update_node(self.me, alive)
        self.d.log_ring.flush()
        if self.libvirt_ok:
            self.d.vms.kick_all()
