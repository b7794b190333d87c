"""The faults of issue 12 on a running 3-node container lab, each as one function that injects it, waits for the
cluster to recover, checks the invariants (AssertionError naming what broke) and returns how long recovery took.
tests/system/test_faults.py asserts them; bench/faults.py times them. The lab, a VM on an RBD disk and the watch
(labfaults.Watch) come from `world()`.

The lab runs the lab configs' timers (keepalive 2 s, dead after 5: looser than the defaults, as a lab shares one
machine's cores among its nodes). Its migrations are capped at 1 MiB/s
(`[migration] bandwidth_mib`) so that a migration is still copying when its target is frozen; the VM's own
migration deadline is 8 s (live-only: no fallback).
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvc.config.load import load_text
from pvc.config.schema import ClusterFile
from pvc.installer.lab.state import example_config
from tests.harness.labctl import Lab, wait
from tests.harness.labfaults import (
    Disk,
    MiB,
    NodeShell,
    Watch,
    ZkKeys,
    floating_ip_holders,
    frozen,
    heal,
    partition,
    signal_unit,
)

NODES = ("node1", "node2", "node3")
VM = "faultvm"
VOLUME = "vms/faultdisk"
DISK_MIB = 16
MIGRATION_TIMEOUT_S = 8
ZK_UNIT, PVCD_UNIT = "pvc-zookeeper.service", "pvc-pvcd.service"


@dataclass
class World:
    lab: Lab
    cfg: ClusterFile
    shell: NodeShell
    watch: Watch
    zk: ZkKeys
    disk: Disk

    @property
    def judge_s(self) -> float:
        """How long a node without keepalives takes to be judged dead: what a false fence would need."""
        return float(self.cfg.timers.keepalive_interval * self.cfg.timers.dead_after)


def lab_config(path: Path) -> Path:
    """The lab's 3-node example with its migrations slowed down (see above)."""
    text = example_config("container", 3).read_text()
    assert text.rstrip().splitlines()[-1].startswith("max_downtime_ms"), "[migration] is no longer the last table"
    path.write_text(text.rstrip() + "\nbandwidth_mib = 1\n")
    return path


def api(lab: Lab, *args: str, timeout: float = 90) -> Any:
    """A `pvc -c lab ... --format json` answer, retried while the API moves to a new primary."""
    return lab.api_json(*args, timeout=timeout)


def primary(lab: Lab) -> str:
    return wait("a primary", lambda: next((n["name"] for n in api(lab, "node", "list") if n["primary"]), None), 90)


def home(world: World) -> str:
    """Where the VM runs, by the watch: exactly one node."""
    world.watch.wait_rounds()
    nodes = world.watch.where.get(VM, [])
    assert len(nodes) == 1, f"{VM} runs on {nodes}"
    return nodes[0]


@contextlib.contextmanager
def world(workdir: Path, labdir: Path, ns: str, api_port: int, squashfs: Path) -> Iterator[World]:
    """A formed lab with the VM running on its RBD disk (a known pattern, uploaded), and the watch on; the lab is
    taken down after the block."""
    (workdir / "client").mkdir(exist_ok=True)
    lab = Lab(labdir, ns, api_port, workdir / "client")
    config = lab_config(workdir / "cluster.toml")
    cfg = load_text(config.read_text(), str(config)).config
    assert cfg is not None
    lab.run("down", check=False)  # a lab left by an interrupted run
    watch = None
    try:
        argv = ["--config", str(config), "--squashfs", str(squashfs), "--api-port", str(api_port)]
        print(lab.run("up", "--nodes", "3", *argv, "--timeout", "600", timeout=700).stdout)
        raw = workdir / "disk.raw"
        raw.write_bytes(bytes(range(256)) * 4096 * DISK_MIB)
        up = lab.pvc("storage", "volume", "upload", *VOLUME.split("/"), str(raw), "--quiet", timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        definition = {
            "name": VM,
            "memory_mib": 64,
            "machine": "pc",
            "disks": [{"volume": VOLUME}],
            "migration": {"method": "live-only", "timeout_s": MIGRATION_TIMEOUT_S},
        }
        (workdir / "vm.json").write_text(json.dumps(definition))
        defined = lab.pvc("vm", "define", "--file", str(workdir / "vm.json"))
        assert defined.returncode == 0, defined.stdout + defined.stderr
        started = lab.pvc("vm", "start", VM, "--wait", timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        shell = NodeShell(lab.labdir)
        watch = Watch(shell).start()
        ips = [str(n.ip.cluster) for n in cfg.nodes]
        w = World(lab, cfg, shell, watch, ZkKeys(shell, ips), Disk(shell, VM, VOLUME, bytearray(raw.read_bytes())))
        w.disk.write(home(w), 0, 0x5A)
        w.zk.write("node1", ["setup-0", "setup-1"])
        yield w
    finally:
        if watch is not None:
            watch.stop()
        print(lab.run("down", check=False).stdout)


def assert_invariants(world: World, vm_home: str | None = None) -> str:
    """No double run, no false fence, the VM running once (on `vm_home` when given), every acknowledged ZooKeeper
    key and every acknowledged disk write intact; a new write acknowledged and read back. Returns where the VM
    runs."""
    assert world.watch.double_runs == [], world.watch.double_runs
    assert world.watch.false_fences() == [], f"powered off: {world.watch.false_fences()}"
    now = home(world)
    if vm_home is not None:
        assert now == vm_home, f"{VM} moved from {vm_home} to {now}"
    reader = next(n for n in world.shell.powered() if n != now)
    assert world.zk.lost(reader) == [], "acknowledged ZooKeeper keys lost"
    assert world.disk.actual(reader) == world.disk.expected(), "the disk's checksum is not that of its writes"
    offset = 1 + len(world.zk.acked) % (DISK_MIB - 1)
    world.disk.write(now, offset, offset)
    assert world.disk.actual(reader) == world.disk.expected(), "the disk's checksum is not that of its writes"
    return now


def nodes_healthy(world: World) -> list[dict]:
    """Every powered node's record says its daemon runs and it carries no fence."""

    def healthy() -> list[dict] | None:
        nodes = api(world.lab, "node", "list")
        up = world.shell.powered()
        return (
            nodes if all(n["daemon_state"] == "run" and n["fence"] is None for n in nodes if n["name"] in up) else None
        )

    return wait("every powered node running and unfenced", healthy, 90)


# -- the faults --------------------------------------------------------------------------------------------------
def zookeeper_frozen(world: World, nodes: list[str], seconds: float = 20) -> dict[str, float]:
    """ZooKeeper SIGSTOPped on `nodes` for `seconds`, then resumed: nobody fenced, the VM untouched. Returns the
    seconds from the resume until every node's record was healthy again."""
    vm_home = home(world)
    tag = f"frozen-{len(nodes)}-{int(time.time())}"
    world.zk.write("node1", [f"{tag}-before"])
    with frozen(world.shell, nodes, ZK_UNIT):
        time.sleep(seconds)
    t0 = time.monotonic()
    nodes_healthy(world)
    recovered = time.monotonic() - t0
    time.sleep(world.judge_s * 3)  # every node has had three windows to be (wrongly) judged dead
    nodes_healthy(world)
    world.zk.write("node2", [f"{tag}-after"])
    assert_invariants(world, vm_home)
    return {"recover_s": recovered}


def primary_frozen(world: World) -> dict[str, float]:
    """The primary's pvcd SIGSTOPped: another coordinator primary with the floating IP, nobody fenced; resumed,
    the old one steps down (the IP on one node only). Returns the seconds to the new primary and to the IP."""
    vm_home = home(world)
    old = primary(world.lab)
    address = str(world.cfg.network.cluster.floating_ip)
    assert floating_ip_holders(world.shell, address) == [old]
    t0 = time.monotonic()
    with frozen(world.shell, [old], PVCD_UNIT):
        new = wait("a new primary", lambda: (p := primary(world.lab)) != old and p, 90, interval=0.5)
        took = time.monotonic() - t0
        wait("the floating IP on the new primary", lambda: new in floating_ip_holders(world.shell, address), 30)
        ip_s = time.monotonic() - t0
        time.sleep(world.judge_s + world.cfg.timers.keepalive_interval)  # long enough to be judged
        assert world.watch.false_fences() == [], f"powered off: {world.watch.false_fences()}"
    wait("the floating IP on one node", lambda: floating_ip_holders(world.shell, address) == [new], 60)
    nodes_healthy(world)
    assert primary(world.lab) == new, "the old primary took the role back"
    assert_invariants(world, vm_home)
    return {"recover_s": took, "floating_ip_s": ip_s}


def zookeeper_leader_killed(world: World) -> dict[str, float]:
    """The ZooKeeper leader SIGKILLed: the others elect one, writes go on, nobody fenced, nothing lost. Returns
    the seconds to a new leader."""
    vm_home = home(world)
    modes = world.zk.modes("node1")
    leader = NODES[modes.index("leader")]
    world.zk.write("node1", [f"leader-{leader}-before"])
    t0 = time.monotonic()
    signal_unit(world.shell, leader, ZK_UNIT, "KILL")
    other = next(n for n in NODES if n != leader)
    wait("a new ZooKeeper leader", lambda: "leader" in world.zk.modes(other), 60, interval=0.5)
    took = time.monotonic() - t0
    world.zk.write(other, [f"leader-{leader}-during"])
    time.sleep(world.judge_s * 2)
    world.shell.run(leader, f"systemctl start {ZK_UNIT}")  # a no-op when systemd restarted it already
    wait("three ZooKeeper members", lambda: sorted(world.zk.modes(other)) == ["follower", "follower", "leader"], 90)
    nodes_healthy(world)
    assert_invariants(world, vm_home)
    return {"recover_s": took}


def incoming_qemu(world: World, node: str) -> int:
    out = world.shell.run(node, f"pgrep -f '[g]uest={VM}' || true").split()  # [g]: not this shell's own line
    return int(out[0]) if out else 0


def migration_target_frozen(world: World) -> dict[str, Any]:
    """The migration target's incoming QEMU SIGSTOPped mid-copy: aborted after the VM's deadline, the task fails
    saying so, the VM runs on where it was. Returns the seconds from the freeze to the task's end, and its
    output."""
    source = home(world)
    target = next(n for n in NODES if n != source)
    pvc = str(Path(sys.executable).parent / "pvc")
    migrate = subprocess.Popen(
        [pvc, "-c", "lab", "vm", "migrate", VM, "--target", target, "--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=world.lab.env,
    )

    def incoming() -> int:
        if migrate.poll() is not None:  # over before it could be caught: say how
            raise RuntimeError(f"the migration ended at once: {migrate.communicate()[0]}")
        return incoming_qemu(world, target)

    try:
        pid = wait("the incoming QEMU on the target", incoming, 60, interval=0.2)
        wait(
            "the migration copying",
            lambda: "Unbounded" in world.shell.run(source, f"virsh -c qemu:///system domjobinfo {VM}", check=False),
            60,
            interval=0.2,
        )
        t0 = time.monotonic()
        world.shell.run(target, f"kill -STOP {pid}")
        try:
            output, _ = migrate.communicate(timeout=120)
            took = time.monotonic() - t0
        finally:
            world.shell.run(target, f"kill -CONT {pid} 2>/dev/null || true", check=False)
    finally:
        if migrate.poll() is None:
            migrate.kill()
    assert migrate.returncode != 0, output
    assert f"did not finish within {MIGRATION_TIMEOUT_S}s and was aborted" in output, output
    assert f"stays on {source}" in output, output
    wait(f"{VM} homed on {source} again", lambda: api(world.lab, "vm", "info", VM)["node"] == source, 60)
    assert_invariants(world, source)
    return {"recover_s": took, "output": output}


def osd_killed(world: World, writes: int = 8) -> dict[str, float]:
    """An OSD (not on the VM's node) SIGKILLed while the VM's QEMU writes its disk: every write acknowledged,
    the checksum that of every write, then and after the OSD is back. Returns the seconds the writes took and
    the seconds until every OSD was up again."""
    vm_home = home(world)
    tree = json.loads(world.shell.run("node1", "ceph osd tree -f json 2>/dev/null"))
    host = next(h for h in tree["nodes"] if h["type"] == "host" and h["name"] != vm_home)
    osd = host["children"][0]
    errors: list[BaseException] = []
    done: list[float] = []  # when each write was acknowledged
    stop = threading.Event()

    def write_loop() -> None:
        try:  # 1 MiB at a time over 8 MiB, until told to stop
            while not stop.is_set():
                i = len(done)
                world.disk.write(vm_home, 4 + i % 8, (0xC0 + i) % 256)
                done.append(time.monotonic())
        except BaseException as exc:
            errors.append(exc)

    writer = threading.Thread(target=write_loop)
    t0 = time.monotonic()
    writer.start()
    wait("the first writes", lambda: len(done) >= 2 or errors, 60, interval=0.1)
    signal_unit(world.shell, host["name"], f"pvc-ceph-osd@{osd}.service", "KILL")
    killed = time.monotonic()
    # the kill comes amid the writes, and `writes` more are acknowledged after it
    wait(f"{writes} writes after the kill", lambda: sum(t > killed for t in done) >= writes or errors, 600, 0.2)
    stop.set()
    writer.join(600)
    written = time.monotonic() - t0
    assert not writer.is_alive() and errors == [], errors
    reader = next(n for n in NODES if n != vm_home)
    assert world.disk.actual(reader) == world.disk.expected(), "the disk's checksum is not that of its writes"
    world.shell.run(host["name"], f"systemctl start pvc-ceph-osd@{osd}.service")  # a no-op once systemd did
    wait(
        "every OSD up again",
        lambda: json.loads(world.shell.run("node1", "ceph osd stat -f json 2>/dev/null"))["num_up_osds"] == 3,
        180,
        interval=2,
    )
    back = time.monotonic() - t0
    assert_invariants(world, vm_home)
    return {"writes_s": written, "recover_s": back}


FLOOD_VM, FLOOD_VOLUME = "floodvm", "vms/flooddisk"
FLOOD_SECONDS = 60
# On a node: the VM's console ring in ZooKeeper (its znode's version counts the writes) through PVC's own client,
# with the credentials the node derives from its join key.
ZK_CONSOLE = """
import json
from pathlib import Path
from pvc.config.load import load
from pvc.config.secrets import read_join_key
from pvc.nodeos.state import layout
from pvc.nodeos.state.store import ClusterState, cluster_client
path = "/run/pvc/cluster.toml"
cfg = load(path).config
z = cluster_client(cfg, read_join_key(cfg, Path(path).parent))
z.start(timeout=30)
stat = z.exists(layout.vm_console(%(uuid)r))
ring = ClusterState(z).console(%(uuid)r)
print(json.dumps({"version": stat.version if stat else -1, "lines": len(ring),
                  "bytes": sum(len(line.encode()) + 1 for line in ring)}))
z.stop()
"""


def flood_disk() -> bytes:
    """A 1 MiB disk whose boot sector (16-bit, loaded by SeaBIOS at 0x7c00) prints lines of 63 'x' to COM1 for
    ever, as fast as the CPU goes: a guest flooding its serial console."""
    code = bytes.fromhex(
        "baf803"  # mov dx, 0x3f8 (COM1)
        "b93f00"  # line: mov cx, 63
        "b078ee"  # char: mov al, 'x'; out dx, al
        "e2fb"  # loop char
        "b00aee"  # mov al, 10; out dx, al
        "ebf3"  # jmp line
    )
    return (code.ljust(510, b"\0") + b"\x55\xaa").ljust(MiB, b"\0")


def console_flood(world: World, workdir: Path, seconds: float = FLOOD_SECONDS) -> dict[str, Any]:
    """A second VM floods its serial console for `seconds`: its node writes the console ring to ZooKeeper at most
    once a second and within CONSOLE_BYTES, the console folder on PVCDATA stays near its cap (MAX_FILE_BYTES) and
    PVCDATA stays below the 80 % at which a fault is raised (no such fault). The file system's own growth is
    reported, not asserted: ZooKeeper preallocates its transaction logs 64 MiB at a time and Ceph's monitor store
    compacts, whatever the console does. The flood VM is removed after; the fault VM was never touched. Returns the
    write rate, the largest console folder seen and PVCDATA's growth."""
    from pvc.nodeos.daemon.console import MAX_FILE_BYTES
    from pvc.nodeos.state.store import CONSOLE_BYTES

    vm_home = home(world)
    raw = workdir / "flood.raw"
    raw.write_bytes(flood_disk())
    up = world.lab.pvc("storage", "volume", "upload", *FLOOD_VOLUME.split("/"), str(raw), "--quiet", timeout=300)
    assert up.returncode == 0, up.stdout + up.stderr
    defined = world.lab.pvc(
        "vm", "define", "--name", FLOOD_VM, "--memory", "64", "--machine", "pc", "--disk", FLOOD_VOLUME
    )
    assert defined.returncode == 0, defined.stdout + defined.stderr
    try:
        started = world.lab.pvc("vm", "start", FLOOD_VM, "--wait", timeout=300)
        assert started.returncode == 0, started.stdout + started.stderr
        info = api(world.lab, "vm", "info", FLOOD_VM)
        node, vm_uuid = info["running_on"], info["uuid"]
        folder = "/var/lib/pvc/console"  # the node's console files (pvcd's state dir)

        def ring() -> dict[str, int]:
            return json.loads(world.shell.python(node, ZK_CONSOLE % {"uuid": vm_uuid}, timeout=90))

        wait("the flood in the console ring", lambda: ring()["lines"] > 10, 120, interval=1.0)
        used = "df --output=used,pcent -B1 /var/lib/pvc | tail -1"
        used_before = int(world.shell.run(node, used).split()[0])
        first, t0, largest, pct = ring(), time.monotonic(), 0, 0
        while time.monotonic() - t0 < seconds:
            size = world.shell.run(node, f"du -sb {folder} | cut -f1", check=False).strip()
            largest = max(largest, int(size or 0))
            pct = max(pct, int(world.shell.run(node, used).split()[1].rstrip("%")))
            time.sleep(1)
        last = ring()
        elapsed = time.monotonic() - t0
        growth = int(world.shell.run(node, used).split()[0]) - used_before
        writes = last["version"] - first["version"]
        assert 0 < writes <= elapsed + 2, f"{writes} console writes to ZooKeeper in {elapsed:.0f} s"
        assert last["bytes"] <= CONSOLE_BYTES, last
        # QEMU appends between two of the tailer's passes (0.5 s) at most what it prints meanwhile
        assert largest < 4 * MAX_FILE_BYTES, f"the console folder {folder} reached {largest} bytes"
        assert pct < 80, f"PVCDATA reached {pct} % during the flood"
        faults = [f for f in api(world.lab, "cluster", "faults") if "disk-full" in f.get("id", "")]
        assert faults == [], faults
    finally:
        world.lab.pvc("vm", "stop", FLOOD_VM, "--wait", timeout=120)
        world.lab.pvc("vm", "remove", FLOOD_VM, "--delete-disks", "--yes", timeout=120)
    wait(f"{FLOOD_VM} gone", lambda: not world.watch.where.get(FLOOD_VM), 60, interval=1.0)
    assert_invariants(world, vm_home)
    return {"writes_per_s": writes / elapsed, "console_max_bytes": largest, "pvcdata_growth_bytes": growth}


def node_partitioned(world: World) -> dict[str, Any]:
    """The VM's node cut from the cluster network (nftables drop on its NIC, in its namespace): fenced through
    its BMC, the VM running again on another node exactly once, its disk intact. The node stays off. Returns the
    seconds to the fence and to the VM running elsewhere."""
    victim = home(world)
    world.zk.write(next(n for n in NODES if n != victim), [f"partition-{victim}-before"])
    world.watch.expect_off.add(victim)
    t0 = time.monotonic()
    partition(world.shell, victim, world.cfg.network.cluster.device)
    try:
        wait(f"{victim} powered off by its BMC", lambda: victim in world.watch.powered_off, 180, interval=0.5)
        fenced = time.monotonic() - t0
        moved = wait(
            f"{VM} running on another node",
            lambda: (w := world.watch.where.get(VM, [])) and w[0] != victim and w[0],
            240,
            interval=0.5,
        )
        took = time.monotonic() - t0
    finally:
        heal(world.shell, victim)
    record = next(n for n in api(world.lab, "node", "list") if n["name"] == victim)
    assert record["daemon_state"] in ("dead", "fenced") and record["fence"] is not None, record
    assert assert_invariants(world) == moved
    return {"victim": victim, "fence_s": fenced, "recover_s": took}


def partitioned_node_rejoins(world: World, victim: str) -> dict[str, Any]:
    """The partition healed, the fenced node is powered on again through its BMC: it forms again and rejoins
    `flushed` — running, but not taking back the VM it lost, which stays where it runs now — until `pvc node
    ready`. Returns the seconds from power-on to the node's daemon running."""
    vm_home = home(world)
    assert vm_home != victim
    t0 = time.monotonic()
    world.lab.run("start", victim)
    wait(f"{victim} powered on", lambda: victim in world.shell.powered(), 60, interval=0.5)
    world.watch.powered_on_again(victim)

    def rejoined() -> dict | None:
        record = next(n for n in api(world.lab, "node", "list") if n["name"] == victim)
        return record if record["daemon_state"] == "run" else None

    record = wait(f"{victim} running again", rejoined, 600, interval=2.0)
    took = time.monotonic() - t0
    assert record["domain_state"] == "flushed", record
    time.sleep(world.judge_s * 2)  # long enough for a wrong start of the lost VM to show
    assert_invariants(world, vm_home)
    ready = world.lab.pvc("node", "ready", victim, "--wait", timeout=300)
    assert ready.returncode == 0, ready.stdout + ready.stderr
    state = next(n for n in api(world.lab, "node", "list") if n["name"] == victim)["domain_state"]
    assert state == "ready", state
    assert_invariants(world)
    return {"victim": victim, "rejoin_s": took}


def labdir_for(workdir: Path) -> Path:
    """$PVC_LAB_DIR/faults when the run names a lab folder (each engineer's own), else one under `workdir`."""
    return Path(os.environ["PVC_LAB_DIR"]) / "faults" if os.environ.get("PVC_LAB_DIR") else workdir / "l"
