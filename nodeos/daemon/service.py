"""pvcd: one node's daemon. Small controllers over one kazoo client and one libvirt connection."""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from kazoo.protocol.states import KazooState

from pvc.config.schema import ClusterFile
from pvc.config.secrets import read_join_key
from pvc.nodeos.daemon import hostinfo
from pvc.nodeos.daemon.ceph_agent import CephAgent
from pvc.nodeos.daemon.console import ConsoleTailer
from pvc.nodeos.daemon.election import Election
from pvc.nodeos.daemon.fencing import Fencer
from pvc.nodeos.daemon.flush import FlushController
from pvc.nodeos.daemon.housekeeping import Housekeeping
from pvc.nodeos.daemon.keepalive import KeepaliveLoop
from pvc.nodeos.daemon.networks import NetworkController
from pvc.nodeos.daemon.osd_requests import OsdRequests
from pvc.nodeos.daemon.virt import Virt
from pvc.nodeos.daemon.vms import VmController
from pvc.nodeos.daemon.watchdog import Progress, sd_notify
from pvc.nodeos.state import placement
from pvc.nodeos.state.cache import VmCache
from pvc.nodeos.state.migrations import ensure_schema
from pvc.nodeos.state.models import NodeRecord
from pvc.nodeos.state.store import NODE_LOG_BYTES, ClusterState, NotFound, bounded, cluster_client

log = logging.getLogger("pvcd")


@dataclass(frozen=True)
class Options:
    node: str
    state_dir: str = "/var/lib/pvc"
    zookeeper: str | None = None  # default: the coordinators' cluster IPs
    libvirt_uri: str = "qemu:///system"
    migration_uri: str = "qemu+tls://{ip}/system"  # {ip}: the target's cluster IP; TLS (formation/libvirt.py)
    osd_requests: bool = True  # act on `pvc storage osd add` (off where no systemd runs the OSDs: component tests)
    ceph_conf: str = "/etc/ceph/ceph.conf"  # with the client.admin keyring it names (or the default one)
    run_dir: str = "/run/pvc"  # runtime files: the networks' dnsmasq files, nftables and the lease hook's socket
    frr_pathspace: str | None = None  # vtysh -N: the FRR instance of a test namespace (None: the node's FRR)
    disks: tuple[str, ...] = ("/var/pvcdata", "/")  # file systems whose use the keepalive reports (faults at 80 %)
    libvirt_restart: tuple[str, ...] = ("systemctl", "restart", "pvc-libvirtd.service")  # restarts a hung libvirtd


class LogRingHandler(logging.Handler):
    """Keeps this node's recent log lines for `pvc node log` (flushed by the keepalive)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.pending: list[str] = []
        self.state: ClusterState | None = None
        self.node = ""
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.pending.append(self.format(record))
        if len(self.pending) > 100:
            self.pending = bounded(self.pending, max_bytes=NODE_LOG_BYTES)

    def flush(self) -> None:
        if not self.pending or self.state is None or not self.state.zk.connected:
            return
        lines, self.pending = self.pending, []
        with contextlib.suppress(Exception):  # logging must not fail the keepalive; these lines are lost then
            self.state.append_node_log(self.node, lines)


class Daemon:
    def __init__(self, cfg: ClusterFile, base_dir: Path | None, opts: Options) -> None:
        self.cfg, self.base_dir, self.opts = cfg, base_dir, opts
        self.node = cfg.node(opts.node)
        self.join_key = read_join_key(cfg, base_dir)
        self.accelerator = hostinfo.accelerator(cfg.vm.accelerator)  # how this node starts VMs, chosen once
        self.zk = cluster_client(cfg, self.join_key, hosts=opts.zookeeper)
        self.state = ClusterState(self.zk)
        timers = cfg.timers
        # libvirt's keepalive: a libvirtd that answers no ping for dead_after intervals loses its connection
        self.virt = Virt(opts.libvirt_uri, timers.keepalive_interval, max(1, timers.dead_after - 1))
        self.stopping = threading.Event()
        self.progress = Progress(timers.watchdog)
        self.vm_cache = VmCache(self.zk)
        self.log_ring = LogRingHandler()
        self.keepalive = KeepaliveLoop(self)
        self.vms = VmController(self)
        self.flush = FlushController(self)
        self.fencer = Fencer(self)
        self.storage = CephAgent(self, opts.ceph_conf)
        self.fencer.before_restart.append(self.storage.break_locks)
        self.osd_requests = OsdRequests(self)
        self.console = ConsoleTailer(self, Path(opts.state_dir) / "console")
        self.networks = NetworkController(self)
        self.election = Election(self) if self.node.coordinator else None
        self.housekeeping = Housekeeping(self)
        self._said_stalled: set[str] = set()

    def migration_uri(self, target: str) -> str:
        return self.opts.migration_uri.format(ip=self.cfg.node(target).ip.cluster, node=target)

    def candidates(self) -> list[placement.Candidate]:
        return placement.candidates(self.state)

    def _register(self) -> None:
        def boot(r: NodeRecord) -> NodeRecord:
            # A node back from a fence stays flushed until `pvc node ready`; its VMs now run elsewhere.
            return r.model_copy(
                update={
                    "daemon_state": "init",
                    "coordinator": self.node.coordinator,
                    "cpus": _cpus(),
                    "kernel": platform.release(),
                }
            )

        # Only NotFound creates the record, and only if it still does not exist: any other error stops the start
        # (systemd starts pvcd again), so that a record holding a fence or `flushed` is never reset.
        try:
            self.state.update_node(self.node.name, boot)
        except NotFound:
            record = NodeRecord(
                name=self.node.name, coordinator=self.node.coordinator, cpus=_cpus(), kernel=platform.release()
            )
            if not self.state.create_node(record):
                self.state.update_node(self.node.name, boot)

    def connect(self) -> None:
        while not self.stopping.is_set():
            sd_notify("WATCHDOG=1")  # waiting for ZooKeeper is not a stall
            try:
                self.zk.start(timeout=10)
                return
            except Exception as exc:
                log.warning("waiting for ZooKeeper at %s: %s", self.zk.hosts, exc)

    def _zk_state(self, state: KazooState) -> None:
        # While the connection is lost every ZooKeeper call waits for it: that is no controller's stall.
        self.progress.excuse(self.cfg.timers.watchdog if state == KazooState.CONNECTED else None)

    def watchdog(self) -> None:
        """The main loop's check: tell systemd pvcd is alive only while no controller stalled; a primary whose
        election or fencer stalled steps down."""
        if self.election:
            self.election.check_stall()
        stalled = self.progress.stalled()
        if not stalled:
            sd_notify("WATCHDOG=1")
        elif self._said_stalled != set(stalled):
            log.error("no progress: %s; not telling systemd that pvcd is alive", stalled)
            sd_notify(f"STATUS=stalled: {', '.join(sorted(stalled))}")
        self._said_stalled = set(stalled)

    def run(self) -> None:
        logging.getLogger().addHandler(self.log_ring)
        self.log_ring.node = self.node.name
        self.connect()
        if self.stopping.is_set():
            return
        self.log_ring.state = self.state
        self.zk.add_listener(self._zk_state)
        # Each start-up step is bounded (ZooKeeper calls, the VM cache's first read, one libvirt call); each done
        # is progress, told to systemd's watchdog, which counts from the start.
        version = ensure_schema(self.state, self.join_key)
        self._register()
        sd_notify("WATCHDOG=1")
        log.info(
            "pvcd on %s started (schema %d, libvirt %s, VMs under %s)",
            self.node.name,
            version,
            self.opts.libvirt_uri,
            self.accelerator.upper(),
        )
        self.vm_cache.start()
        sd_notify("WATCHDOG=1")
        self.storage.define_secret()  # (again before the first start of a VM with RBD disks, if this one failed)
        sd_notify("WATCHDOG=1")
        self.keepalive.start()
        self.vms.start()
        self.keepalive.tick()
        self.flush.start()
        self.console.start()
        self.networks.start()
        self.fencer.start()
        if self.election:
            self.election.start()
        self.housekeeping.start()
        self.storage.start()
        if self.opts.osd_requests and self.storage.configured():
            self.osd_requests.start()
        sd_notify("READY=1")
        interval = self.cfg.timers.keepalive_interval
        next_tick = time.monotonic() + interval
        while not self.stopping.wait(max(0.0, next_tick - time.monotonic())):
            next_tick += interval
            try:
                self.keepalive.tick()
            except Exception as exc:
                log.warning("keepalive failed: %s", exc)
            self.watchdog()
            if time.monotonic() > next_tick:  # fell behind: do not burst
                next_tick = time.monotonic() + interval
        self.shutdown()

    def shutdown(self) -> None:
        log.info("pvcd stopping")
        sd_notify("STOPPING=1")
        if self.election:
            self.election.stop()
        self.networks.stop()
        with contextlib.suppress(Exception):
            self.state.update_node(self.node.name, lambda r: r.model_copy(update={"daemon_state": "stop"}))
        self.log_ring.flush()
        with contextlib.suppress(Exception):
            self.zk.stop()
            self.zk.close()

    def install_signals(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: self.stopping.set())


def _cpus() -> int:
    return os.cpu_count() or 1
