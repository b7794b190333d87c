"""Fault injection on a running container lab (tests/system/test_faults.py, bench/faults.py): what a fault does to
a node, and the watch that checks the invariants while it lasts.

Every command on a node goes through `nsenter` into that node's namespaces (its init's PID from the supervisor's
power.json): no Python start-up per call, so the watch can ask all three nodes every second on a loaded machine.

The invariants: no VM runs on two nodes at once (asked of every powered node's libvirt); no node is powered off by
its BMC unless the test meant it (the supervisors' power records); acknowledged ZooKeeper keys and disk checksums
survive (each scenario reads them back).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from pvc.installer.lab import network, state
from pvc.installer.lab.cli import nsenter_argv
from tests.harness.labctl import wait

MiB = 1024 * 1024
QEMU_DISK = "/machine/peripheral/virtio-disk0/virtio-backend"  # vmrender's first virtio disk, in QEMU's QOM tree


class NodeDown(OSError):
    """The node is powered off: no command runs on it."""


@dataclass
class NodeShell:
    """Commands on lab nodes by nsenter, without `pvc-lab ssh`'s Python start-up."""

    labdir: Path

    def power(self) -> dict[str, state.Power]:
        return state.power(self.labdir)

    def powered(self) -> list[str]:
        return sorted(n for n, p in self.power().items() if p.power == "on" and p.init_pid)

    def run(self, node: str, command: str, timeout: float = 60, check: bool = True) -> str:
        found = self.power().get(node)
        if found is None or found.power != "on" or not found.init_pid:
            raise NodeDown(f"{node} is powered off")
        out = subprocess.run(
            nsenter_argv(found.init_pid, ["/bin/sh", "-c", command]),
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and out.returncode != 0:
            raise AssertionError(f"on {node}: {command}: exit {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def python(self, node: str, code: str, timeout: float = 60) -> str:
        """A Python script on a node, with PVC's interpreter (base64 on the command line: no shell quoting)."""
        encoded = base64.b64encode(code.encode()).decode()
        return self.run(node, f"echo {encoded} | base64 -d | /opt/pvc/bin/python -", timeout=timeout)

    def netns(self, node: str) -> str:
        return network.node_ns(state.read(self.labdir).lab_ns, node)


@dataclass
class Watch:
    """A background thread that asks every powered node's libvirtd, once a `interval`, which domains run, and
    reads every node's power. A VM seen running on two nodes in two rounds in a row is a double run (one round
    alone can straddle a live migration's hand-over: the nodes are asked one after the other); a node powered off
    that the test did not power off itself (`expect_off`) is a false fence."""

    shell: NodeShell
    interval: float = 1.0
    double_runs: list[str] = field(default_factory=list)
    powered_off: dict[str, float] = field(default_factory=dict)  # node -> when the watch first saw it off
    expect_off: set[str] = field(default_factory=set)
    rounds: int = 0
    where: dict[str, list[str]] = field(default_factory=dict)  # VM name -> nodes, at the last round

    def __post_init__(self) -> None:
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lab-watch", daemon=True)
        self._last_doubles: set[str] = set()

    def start(self) -> Watch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        self._thread.join(30)

    def _running(self, node: str, out: dict[str, list[str]]) -> None:
        try:
            names = self.shell.run(node, "virsh -c qemu:///system list --name --state-running", timeout=20)
        except (NodeDown, AssertionError, subprocess.TimeoutExpired):
            return
        out[node] = [n for n in names.split() if n]

    def sample(self) -> None:
        power = self.shell.power()
        for node, p in power.items():
            if p.power == "off" and node not in self.powered_off:
                self.powered_off[node] = time.monotonic()
        answers: dict[str, list[str]] = {}
        threads = [
            threading.Thread(target=self._running, args=(n, answers)) for n, p in power.items() if p.power == "on"
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        where: dict[str, list[str]] = {}
        for node, names in sorted(answers.items()):
            for name in names:
                where.setdefault(name, []).append(node)
        doubles = {name for name, nodes in where.items() if len(nodes) > 1}
        for name in doubles & self._last_doubles:
            self.double_runs.append(f"{time.strftime('%H:%M:%S')} {name} runs on {', '.join(where[name])}")
        self._last_doubles = doubles
        self.where = where
        self.rounds += 1

    def _loop(self) -> None:
        while not self._halt.is_set():
            with contextlib.suppress(Exception):  # a round that fails is a round missed, never the test's end
                self.sample()
            self._halt.wait(self.interval)

    def powered_on_again(self, node: str) -> None:
        """`node`, powered off on purpose (expect_off), is on again: from now on, its power-off would be a false
        fence."""
        self.expect_off.discard(node)
        self.powered_off.pop(node, None)

    def false_fences(self) -> list[str]:
        return sorted(set(self.powered_off) - self.expect_off)

    def wait_rounds(self, count: int = 2, timeout: float = 60) -> None:
        """Until `count` more rounds are done (what runs where is then current)."""
        target, deadline = self.rounds + count, time.monotonic() + timeout
        while self.rounds < target and time.monotonic() < deadline:
            time.sleep(0.2)


# -- what the faults do ----------------------------------------------------------------------------------------
def signal_unit(shell: NodeShell, node: str, unit: str, sig: str) -> None:
    """Send `sig` to a systemd unit's main process on a node (`systemctl kill` fails on the JVM's other tasks)."""
    shell.run(node, f'pid=$(systemctl show --property=MainPID --value {unit}); [ "$pid" -gt 0 ] && kill -s {sig} $pid')


@contextlib.contextmanager
def frozen(shell: NodeShell, nodes: list[str], unit: str) -> Iterator[None]:
    """SIGSTOP a unit's main process on these nodes for the block; SIGCONT after, on every node still on, even
    when a SIGSTOP failed: a test never leaves a service frozen behind it."""
    try:
        for node in nodes:
            signal_unit(shell, node, unit, "STOP")
        yield
    finally:
        for node in nodes:
            with contextlib.suppress(OSError, AssertionError):
                signal_unit(shell, node, unit, "CONT")


PARTITION = """table inet pvcfault {
    chain cut_in { type filter hook input priority -300; iifname "%(dev)s" drop; }
    chain cut_out { type filter hook output priority -300; oifname "%(dev)s" drop; }
}
"""


def partition(shell: NodeShell, node: str, device: str) -> None:
    """Drop everything in and out of `device` (the cluster network's NIC) in the node's network namespace: the
    namespace is the lab's, so the rule outlives the node's power."""
    subprocess.run(
        ["ip", "netns", "exec", shell.netns(node), "nft", "-f", "-"],
        input=PARTITION % {"dev": device},
        text=True,
        check=True,
        capture_output=True,
    )


def heal(shell: NodeShell, node: str) -> None:
    subprocess.run(
        ["ip", "netns", "exec", shell.netns(node), "nft", "delete", "table", "inet", "pvcfault"], check=False
    )


def floating_ip_holders(shell: NodeShell, address: str) -> list[str]:
    holders = []
    for node in shell.powered():
        with contextlib.suppress(NodeDown, AssertionError, subprocess.TimeoutExpired):
            if f" {address}/" in shell.run(node, "ip -4 -o addr show", timeout=20):
                holders.append(node)
    return holders


# -- ZooKeeper: acknowledged keys ------------------------------------------------------------------------------
ZK_WRITE = """
from kazoo.client import KazooClient
z = KazooClient(hosts=%(hosts)r, timeout=5)
z.start(timeout=30)
z.ensure_path("/pvc-faults")
for key in %(keys)r:
    z.create("/pvc-faults/" + key, key.encode())
    print(key, flush=True)  # acknowledged
z.stop()
"""
ZK_READ = """
import json
from kazoo.client import KazooClient
z = KazooClient(hosts=%(hosts)r, timeout=5)
z.start(timeout=30)
print(json.dumps({k: z.get("/pvc-faults/" + k)[0].decode() for k in z.get_children("/pvc-faults")}))
z.stop()
"""
ZK_MODE = """
import socket
out = []
for host in %(ips)r:
    try:
        s = socket.create_connection((host, 2181), timeout=3); s.sendall(b"srvr"); data = b""
        while chunk := s.recv(4096): data += chunk
        out.append([l.split(": ")[1] for l in data.decode().splitlines() if l.startswith("Mode")][0])
    except (OSError, IndexError):
        out.append("down")
print(" ".join(out))
"""


@dataclass
class ZkKeys:
    """Keys written through ZooKeeper (acknowledged: the create returned) and read back after a fault."""

    shell: NodeShell
    ips: list[str]  # the nodes' cluster addresses, in node order
    acked: set[str] = field(default_factory=set)

    @property
    def hosts(self) -> str:
        return ",".join(f"{ip}:2181" for ip in self.ips)

    def write(self, node: str, keys: list[str]) -> None:
        out = self.shell.python(node, ZK_WRITE % {"hosts": self.hosts, "keys": keys}, timeout=90)
        self.acked |= set(out.split())

    def lost(self, node: str) -> list[str]:
        import json

        found = json.loads(self.shell.python(node, ZK_READ % {"hosts": self.hosts}, timeout=90))
        return sorted(k for k in self.acked if found.get(k) != k)

    def modes(self, node: str) -> list[str]:
        return self.shell.python(node, ZK_MODE % {"ips": self.ips}).split()


# -- the VM's disk: writes by its own QEMU, checked by checksum ------------------------------------------------
QEMU_IO = """
log=/var/log/libvirt/qemu/%(vm)s.log
before=$(stat -c %%s $log)
virsh -c qemu:///system qemu-monitor-command --hmp %(vm)s 'qemu-io -d %(device)s "write -P %(byte)d %(offset)d %(length)d"'
for i in $(seq 1200); do  # up to 120 s: a write to a PG whose OSD died waits until the OSD is marked down
    tail -c +$((before + 1)) $log | grep -q 'wrote %(length)d/%(length)d' && exit 0
    sleep 0.1
done
echo "no acknowledgement in $log" >&2; exit 1
"""


@dataclass
class Disk:
    """The VM's RBD volume as the test knows it: every write its QEMU acknowledged, applied to a copy here, so
    the volume's checksum is known at any time."""

    shell: NodeShell
    vm: str
    volume: str  # pool/name
    content: bytearray

    def write(self, node: str, offset_mib: int, byte: int) -> None:
        """One MiB of `byte` at `offset_mib`, written by the VM's QEMU on `node` (qemu-io in its monitor)."""
        args = {"vm": self.vm, "device": QEMU_DISK, "byte": byte, "offset": offset_mib * MiB, "length": MiB}
        self.shell.run(node, QEMU_IO % args, timeout=180)
        self.content[offset_mib * MiB : (offset_mib + 1) * MiB] = bytes([byte]) * MiB

    def expected(self) -> str:
        return hashlib.sha256(self.content).hexdigest()

    def actual(self, node: str) -> str:
        """The volume's SHA-256 as read on `node`. An export that fails is read again (a placement group whose
        primary OSD just died answers once that OSD is marked down), never hashed: a pipe into sha256sum would
        hash what a failed export left and report a changed disk."""
        # (mktemp -p: the node's /tmp, not the $TMPDIR of the test's environment, which nsenter passes on)
        read = (
            f"f=$(mktemp -p /tmp) && rbd export --no-progress {self.volume} - >$f && sha256sum <$f; rc=$?; "
            "rm -f $f; exit $rc"
        )

        def checksum() -> str | None:
            out = self.shell.run(node, read, timeout=130, check=False).split()
            return out[0] if out else None

        return wait(f"{self.volume} read on {node}", checksum, 300, interval=2.0)
