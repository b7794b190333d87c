"""A runtime test cluster: N simulated servers in network namespaces, each with a BMC (real IPMI), a real
libvirtd and a real pvcd, around a real ZooKeeper in the switch namespace.

    upstream 198.51.100.0/24 (eth0): node .1N, BMCs .10N (in the switch namespace), floating .250
    cluster  192.0.2.0/24   (eth1): node .1N, ZooKeeper .254 (in the switch namespace), floating .250

The test process reaches ZooKeeper through a loopback forwarder and each libvirtd through its unix socket.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shlex
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt
from kazoo.client import KazooClient

from pvc.config.choices import Accelerator
from pvc.config.load import load_text
from pvc.config.secrets import ZK_USER, vm_mac_prefix, zookeeper_password
from pvc.nodeos.state import actions
from pvc.nodeos.state.models import VmSpec
from pvc.nodeos.state.store import ClusterState, make_client
from pvc.nodeos.state.vmdef import VmDefinition
from pvc.nodeos.state.vmrender import Host, render
from tests.harness import libvirtd
from tests.harness.netlab import Net, NetLab, kill_all_in
from tests.harness.procs import Proc, port_free, wait_until
from tests.harness.zookeeper import ZooKeeper

if TYPE_CHECKING:
    from tests.harness.ceph import Ceph

ROOT = Path(__file__).resolve().parents[2]
JOIN_KEY = "c0ffee" * 10 + "c0de"
BMC_USER, BMC_PASSWORD, BMC_PORT = "admin", "component-bmc", 623
UPSTREAM = Net("brup", "198.51.100", "eth0")
CLUSTER = Net("brcl", "192.0.2", "eth1")
VENV_BIN = Path(sys.executable).parent
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)  # errors arrive as exceptions; no stderr noise


def kvm_usable() -> bool:
    return os.access("/dev/kvm", os.R_OK | os.W_OK)


def tiny_vm(name: str, vm_uuid: str | None = None, memory_mib: int = 64, **fields: Any) -> VmDefinition:
    """A firmware-only VM (SeaBIOS, no disk unless `disks` are given: it stays running, printing its boot messages
    on the serial console) through the typed model, as every test VM is. `fields` are more definition fields."""
    return VmDefinition.model_validate(
        {"name": name, "uuid": vm_uuid, "memory_mib": memory_mib, "machine": "pc", **fields}
    )


def tiny_vm_json(name: str, vm_uuid: str | None = None, memory_mib: int = 64, **fields: Any) -> dict[str, Any]:
    """`tiny_vm` as the API and the CLI take it (JSON)."""
    return tiny_vm(name, vm_uuid, memory_mib, **fields).model_dump(mode="json")


def tiny_domain_xml(name: str, console_log: Path, vm_uuid: str | None = None, memory_mib: int = 64) -> str:
    """`tiny_vm` rendered as a node renders it (no Ceph: it has no disk), for a domain a test hands libvirt itself,
    outside PVC (pvcd leaves a domain it does not know alone)."""
    return render(tiny_vm(name, vm_uuid, memory_mib), Host(accelerator(), (), "", str(console_log)))


def accelerator() -> Accelerator:
    """What the simulated servers' pvcd run VMs with (cluster.toml [vm] accelerator): firmware-only VMs start
    under KVM wherever /dev/kvm is usable (even the nested PVM host that hangs a Linux kernel), else TCG."""
    return "kvm" if kvm_usable() else "tcg"


def console_flood_kernel(path: Path) -> Path:
    """A multiboot kernel (the a.out kludge: a flat binary loaded at 1 MiB) that prints lines of 64 'x' to COM1
    for ever, as fast as the CPU goes: a guest flooding its serial console."""
    magic, flags, load = 0x1BADB002, 0x00010000, 0x100000
    header = struct.pack("<8I", magic, flags, -(magic + flags) & 0xFFFFFFFF, load, load, 0, 0, load + 32)
    code = b"".join(
        (
            b"\xba\xf8\x03\x00\x00",  # mov edx, 0x3f8 (COM1)
            b"\x31\xc9",  # xor ecx, ecx
            b"\xb0\x78\xee",  # loop: mov al, 'x'; out dx, al
            b"\x41\xf6\xc1\x3f\x75\xf7",  # inc ecx; test cl, 63; jnz loop
            b"\xb0\x0a\xee\xeb\xf2",  # mov al, 10; out dx, al; jmp loop
        )
    )
    path.write_bytes(header + code)
    return path


def flood_domain_xml(name: str, vm_uuid: str, kernel: Path, console_log: Path) -> str:
    """A tiny domain booting `kernel` (console_flood_kernel) directly, under TCG (a multiboot kernel prints
    nothing under this machine's nested KVM), its serial port logged to `console_log` as vmrender logs a VM's. A
    VM definition has no direct kernel boot: a test starts this domain itself, under a PVC VM's UUID."""
    return (
        f"<domain type='qemu'><name>{name}</name><uuid>{vm_uuid}</uuid>"
        "<memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        f"<os><type arch='x86_64' machine='pc'>hvm</type><kernel>{kernel}</kernel></os><on_poweroff>destroy</on_poweroff>"
        "<devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
        f"<serial type='pty'><log file='{console_log}' append='on'/></serial><console type='pty'/>"
        "<memballoon model='none'/></devices></domain>"
    )


def cluster_toml(
    nodes: list[str],
    keepalive: int = 1,
    dead_after: int = 3,
    fencing: bool = True,
    shutdown_timeout: int = 3,
    session_ms: int = 2000,
    extra: str = "",
    watchdog: int = 10,
    libvirt_restart_after: int = 300,
    fence_retry_after: int = 3,
    max_concurrent: int = 1,
    migration_timeout: int = 60,
    bandwidth_mib: int = 0,
) -> str:
    coordinators = 3 if len(nodes) >= 3 else 1
    lines = [
        "schema = 1",
        "[cluster]",
        'name = "comptest"',
        'domain = "comptest.invalid"',
        f'join_key = "{JOIN_KEY}"',
        "[[network.nics]]",
        'name = "eth0"',
        "[[network.nics]]",
        'name = "eth1"',
        "[network.upstream]",
        'device = "eth0"',
        f'subnet = "{UPSTREAM.prefix}.0/24"',
        f'floating_ip = "{UPSTREAM.prefix}.250"',
        f'gateway = "{UPSTREAM.prefix}.254"',
        "[network.cluster]",
        'device = "eth1"',
        f'subnet = "{CLUSTER.prefix}.0/24"',
        f'floating_ip = "{CLUSTER.prefix}.250"',
        "[bgp]",
        "asn = 65500",
        "[zookeeper]",
        "tick_time_ms = 500",
        f"session_timeout_ms = {session_ms}",
        "[patroni]",
        "ttl = 10",
        "loop_wait = 1",
        "retry_timeout = 2",
        "[timers]",
        f"keepalive_interval = {keepalive}",
        f"dead_after = {dead_after}",
        f"vm_shutdown_timeout = {shutdown_timeout}",
        f"watchdog = {watchdog}",
        f"libvirt_restart_after = {libvirt_restart_after}",
        "[fencing]",
        f"enabled = {'true' if fencing else 'false'}",
        f"retry_after = {fence_retry_after}",
        f"max_concurrent = {max_concurrent}",
        "[migration]",
        "max_downtime_ms = 300",
        f"timeout = {migration_timeout}",
        f"bandwidth_mib = {bandwidth_mib}",
        "[vm]",
        f'accelerator = "{accelerator()}"',
    ]
    for i, name in enumerate(nodes, 1):
        lines += [
            "[[nodes]]",
            f'name = "{name}"',
            f"id = {i}",
            f"coordinator = {'true' if i <= coordinators else 'false'}",
            f'ip = {{ upstream = "{UPSTREAM.prefix}.{10 + i}", cluster = "{CLUSTER.prefix}.{10 + i}" }}',
            f'ipmi = {{ address = "{UPSTREAM.prefix}.{100 + i}", username = "{BMC_USER}", '
            f'password = "{BMC_PASSWORD}", port = {BMC_PORT} }}',
            'data_disk = { path = "/dev/disk/by-id/*pvc-data*" }',
        ]
    return "\n".join(lines) + "\n" + extra


def frr_run_dir(pathspace: str) -> Path:
    return Path("/var/run/frr") / pathspace


def _runs(dom: libvirt.virDomain) -> bool:
    """Whether a listed domain's CPUs run (False for one that ended since it was listed)."""
    try:
        return dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    except libvirt.libvirtError:
        return False


class DoubleRunChecker(threading.Thread):
    """Asks every libvirtd every 200 ms which domains run; records any VM running on two nodes at once."""

    def __init__(self, cluster: RuntimeCluster, interval: float = 0.2) -> None:
        super().__init__(name="double-run-checker", daemon=True)
        self.cluster = cluster
        self.interval = interval
        self.violations: list[str] = []
        self.samples = 0
        self._halt = threading.Event()
        self._conns: dict[str, libvirt.virConnect] = {}

    def _running(self, node: str) -> set[str]:
        try:
            conn = self._conns.get(node)
            if conn is None or not conn.isAlive():
                conn = libvirt.open(self.cluster.libvirt_uri(node))
                self._conns[node] = conn
            return {d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE) if _runs(d)}
        except libvirt.libvirtError:
            self._conns.pop(node, None)
            return set()  # libvirtd down: its node is powered off, so nothing runs there

    def sample(self) -> None:
        seen: dict[str, str] = {}
        for node in self.cluster.nodes:
            for dom in self._running(node):
                if dom in seen:
                    self.violations.append(f"{time.strftime('%H:%M:%S')} VM {dom} runs on {seen[dom]} and {node}")
                seen[dom] = node
        self.samples += 1

    def run(self) -> None:
        self.sample()
        while not self._halt.wait(self.interval):
            self.sample()

    def stop(self) -> None:
        self._halt.set()
        self.join(5)
        self.sample()  # the last word, after the test's final action
        for conn in self._conns.values():
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()


class RuntimeCluster:
    def __init__(
        self,
        workdir: Path,
        nodes: list[str],
        prefix: str = "pvct",
        zk_host_port: int = 21932,
        ceph: Ceph | None = None,
        frr: bool = False,
        **toml_options: object,
    ) -> None:
        self.dir = workdir
        self.frr = frr  # run FRR (zebra, bgpd) in each node's namespace, as formation renders it
        self.ceph = ceph  # a running Ceph (in its own namespace) to plug into the cluster network
        self.nodes = nodes
        self.lab = NetLab(prefix, [UPSTREAM, CLUSTER])
        self.zk_host_port = zk_host_port
        self.toml = cluster_toml(nodes, **toml_options)  # type: ignore[arg-type]  # cluster_toml's keywords, passed through
        result = load_text(self.toml)
        assert result.valid and result.config is not None, [p.format("cluster.toml") for p in result.errors]
        self.cfg = result.config
        self.machines: dict[str, Proc] = {}
        self.procs: list[Proc] = []
        self.zk: ZooKeeper | None = None
        self.client: KazooClient | None = None
        self.checker: DoubleRunChecker | None = None

    # -- addresses -----------------------------------------------------------------------------------------
    def host_id(self, node: str) -> int:
        return 10 + self.nodes.index(node) + 1

    def libvirt_root(self, node: str) -> Path:
        return self.dir / node / "libvirt"

    def libvirt_uri(self, node: str) -> str:
        return libvirtd.socket_uri(self.libvirt_root(node))

    def disk_dir(self, node: str) -> Path:
        """A folder whose file system pvcd reports as one of its disks (a test may mount a small one there)."""
        return self.dir / node / "disk"

    def notify_log(self, node: str) -> Path:
        """What the node's pvcd told its (simulated) systemd: one `TIME MESSAGE` line per datagram."""
        return self.dir / node / "notify.log"

    def bmc_address(self, node: str) -> str:
        return f"{UPSTREAM.prefix}.{100 + self.nodes.index(node) + 1}"

    # -- lifecycle -----------------------------------------------------------------------------------------
    def up(self, cache: Path) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "cluster.toml").write_text(self.toml)
        port_free(self.zk_host_port)  # a leftover forwarder would connect us to another cluster
        self.lab.up(self.nodes, {n: self.host_id(n) for n in self.nodes})
        if self.ceph is not None and self.ceph.net is not None:
            self.ceph.net.attach(
                self.lab.switch, CLUSTER.bridge, f"{CLUSTER.prefix}.253", [self.lab.ns(n) for n in self.nodes]
            )
        zk_address = self.lab.add_switch_address(CLUSTER, 254)
        self.lab.add_switch_address(UPSTREAM, 254)
        for node in self.nodes:
            self.lab.add_switch_address(UPSTREAM, 100 + self.nodes.index(node) + 1)
        self.zk = ZooKeeper(self.dir / "zookeeper", zk_address, 2181, netns=self.lab.switch, tick_ms=500)
        sock = self.dir / "zk.sock"
        self.procs.append(
            Proc(
                "zk-forward-in",
                [
                    "ip",
                    "netns",
                    "exec",
                    self.lab.switch,
                    "socat",
                    f"UNIX-LISTEN:{sock},fork,unlink-early",
                    f"TCP:{zk_address}:2181",
                ],
                self.dir / "forward.log",
            )
        )
        self.procs.append(
            Proc(
                "zk-forward-out",
                ["socat", f"TCP-LISTEN:{self.zk_host_port},bind=127.0.0.1,reuseaddr,fork", f"UNIX-CONNECT:{sock}"],
                self.dir / "forward.log",
            )
        )
        self.zk.wait_ready(hosts=f"127.0.0.1:{self.zk_host_port}")
        for node in self.nodes:
            self.start_machine(node, cache)
            if not any(cache.iterdir()):  # the first libvirtd probed QEMU: share its capabilities cache
                wait_until(f"libvirtd on {node}", functools.partial(self.virt_ok, node), 60, proc=self.machines[node])
                shutil.copytree(self.libvirt_root(node) / "cache", cache, dirs_exist_ok=True)
        self.client = make_client(
            f"127.0.0.1:{self.zk_host_port}", user=ZK_USER, password=zookeeper_password(JOIN_KEY), timeout=5
        )
        self.client.start(timeout=15)
        self.state = ClusterState(self.client)
        self.wait_formed()
        self.checker = DoubleRunChecker(self)
        self.checker.start()

    def frr_processes(self, node: str) -> list[dict]:
        """zebra and bgpd of a node in the foreground, in their own FRR pathspace (vtysh -N <namespace>)."""
        from pvc.nodeos.formation import frr

        ndir = self.dir / node / "frr"  # the daemons' stdout; their files are in the run directory, which
        ndir.mkdir(parents=True, exist_ok=True)  # the frr user can reach (the work directory is root's only)
        run = frr_run_dir(self.lab.ns(node))
        shutil.rmtree(run, ignore_errors=True)
        run.mkdir(parents=True)
        (run / "zebra.conf").write_text(f"hostname {node}\n")
        (run / "bgpd.conf").write_text(frr.render_conf(self.cfg, self.cfg.node(node)))
        for path in (run, *run.iterdir()):
            shutil.chown(path, "frr", "frr")
        out = []
        for daemon in ("zebra", "bgpd"):
            argv = [f"/usr/lib/frr/{daemon}", "-N", self.lab.ns(node), "-f", str(run / f"{daemon}.conf")]
            argv += ["-i", str(run / f"{daemon}.pid"), "-P", "0", "--log", f"file:{run / daemon}.log"]
            out.append(
                {
                    "name": daemon,
                    "argv": argv,
                    "log": str(ndir / f"{daemon}.out"),
                    "ready_path": str(run / f"{daemon}.vty"),
                }
            )
        return out

    def start_machine(self, node: str, cache: Path) -> None:
        ndir = self.dir / node
        ndir.mkdir(parents=True, exist_ok=True)
        # a small file system of its own that pvcd watches (mounted before pvcd's `ip netns exec` copies the mounts)
        self.disk_dir(node).mkdir(exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(self.disk_dir(node))], check=True)
        root = libvirtd.prepare(self.libvirt_root(node), self.cfg, self.cfg.node(node), JOIN_KEY, cache)
        restart_libvirtd = [sys.executable, "-m", "tests.harness.libvirtd", "restart", str(root), node]
        restart_libvirtd.append(str(ndir / "libvirtd.log"))
        pvcd_extra = ["--run-dir", str(ndir / "run")]
        if self.frr:
            pvcd_extra += ["--frr-pathspace", self.lab.ns(node)]
        spec = {
            "netns": self.lab.ns(node),
            "bmc": {"address": self.bmc_address(node), "port": BMC_PORT, "user": BMC_USER, "password": BMC_PASSWORD},
            "processes": [
                *(self.frr_processes(node) if self.frr else []),
                {
                    "name": "libvirtd",
                    "argv": libvirtd.command(root, node),
                    "log": str(ndir / "libvirtd.log"),
                    "ready_path": str(root / "run" / "libvirt-sock"),
                },
                {
                    "name": "pvcd",
                    "argv": [
                        str(VENV_BIN / "pvcd"),
                        "--config",
                        str(self.dir / "cluster.toml"),
                        "--node",
                        node,
                        "--state-dir",
                        str(ndir / "state"),
                        "--zookeeper",
                        f"{CLUSTER.prefix}.254:2181",
                        "--libvirt-uri",
                        self.libvirt_uri(node),
                        "--migration-uri",
                        libvirtd.migration_uri(root),
                        "--ceph-conf",  # a missing file: no Ceph, no storage agent
                        str(self.ceph.conf) if self.ceph else str(ndir / "no-ceph.conf"),
                        *pvcd_extra,
                        "--disk",
                        "/",
                        "--disk",
                        str(self.disk_dir(node)),
                        "--libvirt-restart-command",
                        shlex.join(restart_libvirtd),
                    ],
                    "log": str(ndir / "pvcd.log"),
                    "cwd": str(ROOT),
                    "notify": str(ndir / "notify.sock"),
                    "notify_log": str(self.notify_log(node)),
                    "watchdog_sec": self.cfg.timers.watchdog,
                },
            ],
        }
        (ndir / "machine.json").write_text(json.dumps(spec, indent=2))
        self.machines[node] = Proc(
            f"machine-{node}",
            [
                "ip",
                "netns",
                "exec",
                self.lab.switch,
                sys.executable,
                "-m",
                "tests.harness.server",
                str(ndir / "machine.json"),
            ],
            ndir / "machine.log",
            cwd=str(ROOT),
        )

    def virt_ok(self, node: str) -> bool:
        conn = libvirt.open(self.libvirt_uri(node))
        conn.close()
        return True

    def wait_formed(self, timeout: float = 90) -> None:
        def formed() -> bool:
            records = {r.name: r for r in self.state.nodes()}
            return all(records.get(n) and records[n].daemon_state == "run" for n in self.nodes) and bool(
                self.state.primary()
            )

        wait_until("every pvcd to run and a primary to be elected", formed, timeout, interval=0.3)

    def down(self) -> None:
        """End everything this cluster started, whatever state it is in."""
        steps = [
            lambda: self.checker.stop() if self.checker else None,
            lambda: self.client and (self.client.stop(), self.client.close()),
            *[lambda n=n: self.power_loss(n) for n in self.nodes],
            *[lambda p=p: p.stop(timeout=15) for p in self.machines.values()],
            *[lambda p=p: p.stop(timeout=5) for p in self.procs],
            lambda: self.zk.stop() if self.zk else None,
            self.lab.down,
            *[lambda n=n: shutil.rmtree(frr_run_dir(self.lab.ns(n)), ignore_errors=True) for n in self.nodes],
            *[lambda n=n: subprocess.run(["umount", "-l", str(self.disk_dir(n))], check=False) for n in self.nodes],
        ]
        for step in steps:
            with contextlib.suppress(Exception):
                step()

    # -- actions for tests ---------------------------------------------------------------------------------
    def power_loss(self, node: str) -> None:
        """SIGKILL every process of the node (pvcd, libvirtd, QEMU); its BMC stays reachable."""
        kill_all_in(self.lab.ns(node))

    def pvcd_pid(self, node: str) -> int:
        for pid in self.lab.pids(node):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if any(arg.endswith(b"/pvcd") for arg in argv[:2]):
                return pid
        raise LookupError(f"no pvcd runs on {node}")

    def restart_pvcd(self, node: str) -> None:
        """Kill the node's pvcd and start it again (systemd's Restart=always after a crash)."""
        os.kill(self.machines[node].pid, signal.SIGUSR1)

    def kill_libvirtd(self, node: str) -> None:
        pid = int((self.libvirt_root(node) / "libvirtd.pid").read_text())
        os.kill(pid, 9)

    def running_on(self, node: str) -> set[str]:
        try:
            conn = libvirt.open(self.libvirt_uri(node))
        except libvirt.libvirtError:
            return set()
        try:
            return {d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE) if _runs(d)}
        finally:
            conn.close()

    def domain_xml(self, node: str, vm_uuid: str) -> str:
        """The XML of a domain as libvirt on `node` has it (single quotes, as libvirt writes attributes)."""
        conn = libvirt.open(self.libvirt_uri(node))
        try:
            return conn.lookupByUUIDString(vm_uuid).XMLDesc(0)
        finally:
            conn.close()

    def where(self, vm_uuid: str) -> list[str]:
        return [n for n in self.nodes if vm_uuid in self.running_on(n)]

    def define(self, name: str, node: str = "n1", vm_uuid: str | None = None, **fields: Any) -> VmSpec:
        """Define a tiny VM (tiny_vm) on `node`, with more definition fields from `fields`."""
        return actions.define_vm(
            self.state, tiny_vm(name, vm_uuid, **fields), node=node, mac_prefix=vm_mac_prefix(JOIN_KEY)
        )

    def wait_running(self, spec: VmSpec, node: str, timeout: float = 60) -> None:
        """Until the VM runs on `node` only and its status says so."""

        def ok() -> bool:
            return self.where(spec.uuid) == [node] and self.state.vm_status(spec.uuid).state == "running"

        wait_until(f"VM {spec.name} running on {node} only", ok, timeout, interval=0.2)

    def wait_stopped(self, spec: VmSpec, timeout: float = 60) -> None:
        wait_until(f"VM {spec.name} stopped everywhere", lambda: self.where(spec.uuid) == [], timeout)

    def log(self, node: str, name: str = "pvcd", lines: int = 60) -> str:
        path = self.dir / node / f"{name}.log"
        try:
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""
