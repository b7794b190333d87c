"""VMs on RBD disks, on three simulated servers with the session's Ceph plugged into their cluster network.

One VM's life, checked at every step through librbd from the test process and through `qemu-io` in the VM's own
QEMU (the guest-less way to make the VM process write its disk): pvcd renders the disk with the monitors and the
client.libvirt secret; the QEMU holds the disk's exclusive lock; a second VM on the same disk is refused; live
migration carries the disk and the lock; data survives an OSD stopped and restarted; after the node's power loss
the fencer blocklists its client and breaks its lock before the VM restarts elsewhere.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
import time
import xml.etree.ElementTree as ET

import libvirt
import libvirt_qemu
import pytest

from pvc.config.secrets import vm_mac_prefix
from pvc.nodeos.provisioner import remove
from pvc.nodeos.state import actions
from pvc.nodeos.state.store import Conflict
from pvc.nodeos.state.vmdef import Disk
from pvc.nodeos.state.vmstate import TransitionError
from pvc.nodeos.storage import locks, pools, volumes
from pvc.nodeos.storage.ceph import Connection, Missing, connect, mon_command
from tests.harness.cluster import CLUSTER, JOIN_KEY, tiny_vm
from tests.harness.procs import wait_until

MiB = 1024**2
POOL, DISK, EXTRA = "vmpool", "rbdvm-disk", "rbdvm-extra"
DEVICE = "/machine/peripheral/virtio-disk0/virtio-backend"  # the virtio-blk device (its PCI proxy has no disk)


@pytest.fixture(scope="module")
def rados_cluster(ceph):
    with connect(str(ceph.conf)) as c:
        if not c.pool_exists(POOL):
            pools.create_pool(c, POOL, pgs=8, size=3, min_size=2)
        yield c


def define_rbd_vm(cluster, name: str, node: str, volume: str = DISK):
    """A firmware-only VM whose one disk is the RBD volume POOL/`volume` (vda, virtio)."""
    vm = tiny_vm(name, disks=[{"volume": f"{POOL}/{volume}"}])
    return actions.define_vm(cluster.state, vm, node=node, mac_prefix=vm_mac_prefix(JOIN_KEY))


def qemu_io(cluster, node: str, vm_uuid: str, command: str) -> str:
    """Run a qemu-io command in the VM's QEMU, on its disk (HMP `qemu-io -d DEVICE`). QEMU prints the result on
    its standard output, which libvirt keeps in the domain's log: return what it added there."""
    conn = libvirt.open(cluster.libvirt_uri(node))
    try:
        dom = conn.lookupByUUIDString(vm_uuid)
        log = cluster.libvirt_root(node) / "log" / "qemu" / f"{dom.name()}.log"
        before = log.stat().st_size
        out = libvirt_qemu.qemuMonitorCommand(
            dom, f'qemu-io -d {DEVICE} "{command}"', libvirt_qemu.VIR_DOMAIN_QEMU_MONITOR_COMMAND_HMP
        )
    finally:
        conn.close()
    verb = command.split()[0]
    done = f"{'wrote' if verb == 'write' else 'read'} 1048576/1048576"
    wait_until(f"qemu-io {command} on {node}", lambda: done in log.read_text()[before:], 30, interval=0.1)
    result = out + log.read_text()[before:]
    assert "fail" not in result.lower() and "error" not in result.lower(), result
    return result


def node_ip(node: str) -> str:
    return f"{CLUSTER.prefix}.{10 + int(node[1:])}"


def wait_running(cluster, vm_uuid: str, node: str, timeout: float = 60) -> None:
    def ok() -> bool:
        return cluster.where(vm_uuid) == [node] and cluster.state.vm_status(vm_uuid).state == "running"

    wait_until(f"the VM running on {node} only", ok, timeout, interval=0.2)


def holder_ip(rados_cluster) -> str | None:
    alive = [h for h in locks.holders(rados_cluster, POOL, DISK) if h.alive]
    return alive[0].ip if alive else None


def check_data(rados_cluster, patterns: dict[int, int]) -> None:
    with volumes.image(rados_cluster, POOL, DISK, read_only=True) as img:
        for offset, byte in patterns.items():
            assert img.read(offset * MiB, MiB) == bytes([byte]) * MiB, f"pattern {byte:#x} at {offset} MiB"


def test_vm_on_rbd_lock_migration_osd_restart_and_fencing(rbd_runtime, rados_cluster, ceph):
    rt = rbd_runtime
    with _fresh_volume(rados_cluster) as img:
        img.write(b"\xa1" * MiB, 0)  # written before the VM exists: the lock is free again once closed
    patterns = {0: 0xA1}

    spec = define_rbd_vm(rt, "rbdvm", "n1")
    actions.change_state(rt.state, "rbdvm", "start")
    wait_running(rt, spec.uuid, "n1")
    conn = libvirt.open(rt.libvirt_uri("n1"))
    live_xml = conn.lookupByUUIDString(spec.uuid).XMLDesc(0)
    conn.close()
    assert "<auth username='libvirt'>" in live_xml.replace('"', "'") and "protocol='rbd'" in live_xml.replace('"', "'")

    # the VM's QEMU writes its disk through librbd and so holds the exclusive lock
    qemu_io(rt, "n1", spec.uuid, "write -P 0xc1 1M 1M")
    patterns[1] = 0xC1
    assert "read 1048576/1048576" in qemu_io(rt, "n1", spec.uuid, "read -P 0xa1 0 1M")
    wait_until("n1's QEMU to hold the lock", lambda: holder_ip(rados_cluster) == node_ip("n1"), 10)

    # a second VM on the same disk is refused: pvcd sees a live holder
    other = define_rbd_vm(rt, "rbdvm-twin", "n2")
    actions.change_state(rt.state, "rbdvm-twin", "start")
    wait_until("the twin refused", lambda: rt.state.vm_status(other.uuid).state == "failed", 30, interval=0.2)
    reason = rt.state.vm_status(other.uuid).reason
    assert f"locked by a live client at {node_ip('n1')}" in reason, reason
    assert rt.where(other.uuid) == []
    actions.remove_vm(rt.state, other.uuid)

    # live migration to n3 carries the disk (and, at the first write, the lock)
    actions.move_vm(rt.state, spec.uuid, "migrate", target="n3")
    wait_until("migrated", lambda: rt.state.vm(spec.uuid).state == "start", 60, interval=0.2)
    wait_running(rt, spec.uuid, "n3")
    qemu_io(rt, "n3", spec.uuid, "write -P 0xe3 2M 1M")
    patterns[2] = 0xE3
    qemu_io(rt, "n3", spec.uuid, "read -P 0xc1 1M 1M")
    wait_until("n3's QEMU to hold the lock", lambda: holder_ip(rados_cluster) == node_ip("n3"), 10)

    # an OSD stops (size 3, min_size 2: writes go on), the VM writes, the OSD comes back: everything is there
    ceph.stop_osd(0)
    wait_until("osd.0 down", lambda: not _osd_up(rados_cluster, 0), 30, interval=0.2)
    qemu_io(rt, "n3", spec.uuid, "write -P 0x5a 3M 1M")
    patterns[3] = 0x5A
    check_data(rados_cluster, patterns)
    ceph.start_osd(0)
    wait_until("osd.0 up", lambda: _osd_up(rados_cluster, 0), 60, interval=0.2)
    wait_until("every PG active+clean", lambda: _clean(rados_cluster), 60, interval=0.5)
    check_data(rados_cluster, patterns)
    qemu_io(rt, "n3", spec.uuid, "read -P 0x5a 3M 1M")

    # vCPUs and memory set while it runs wait for its next start: the restart after the fence below
    actions.change_vm(rt.state, "rbdvm", vcpus=2, memory_mib=96)
    wanted = ["vcpus: 1 -> 2 (at the next start)", "memory_mib: 64 -> 96 (at the next start)"]
    pending = wait_until("the change pending", lambda: rt.state.vm_status(spec.uuid).pending, 30, interval=0.2)
    assert pending == wanted, pending

    # power loss of n3: fenced, its client blocklisted and its lock broken, the VM restarts elsewhere
    rt.power_loss("n3")
    wait_until("n3 fenced", lambda: rt.state.node("n3").daemon_state == "fenced", 60, interval=0.2)
    wait_until(
        "the VM running on n1 or n2",
        lambda: len(rt.where(spec.uuid)) == 1 and rt.where(spec.uuid)[0] in ("n1", "n2"),
        60,
    )
    new_node = rt.where(spec.uuid)[0]
    blocked = locks.blocklist(rados_cluster)
    assert any(locks.host_of(a) == node_ip("n3") for a in blocked), blocked
    started = time.monotonic()
    qemu_io(rt, new_node, spec.uuid, "write -P 0x77 4M 1M")  # takes the lock at once: nothing to wait out
    patterns[4] = 0x77
    assert time.monotonic() - started < 10
    wait_until(f"{new_node}'s QEMU to hold the lock", lambda: holder_ip(rados_cluster) == node_ip(new_node), 10)
    check_data(rados_cluster, patterns)
    logs = "".join(rt.log(n, lines=400) for n in ("n1", "n2"))
    assert "blocklisted" in logs and "broke its lock" in logs
    started_xml = ET.fromstring(rt.domain_xml(new_node, spec.uuid))
    assert started_xml.findtext("vcpu") == "2" and started_xml.findtext("memory") == str(96 * 1024)  # KiB
    assert rt.state.vm_status(spec.uuid).pending == []
    day_two_changes_of_a_running_vm(rt, rados_cluster, ceph, spec, new_node)


def day_two_changes_of_a_running_vm(rt, rados_cluster, ceph, spec, node: str) -> None:
    """An RBD volume hot-plugged into the running VM (libvirt's live disks show it), refused to another VM, and
    unplugged; what a running VM refuses: removal with its disks, a rename."""
    extra = f"{POOL}/{EXTRA}"
    with contextlib.suppress(Missing):
        volumes.remove_volume(rados_cluster, POOL, EXTRA)
    volumes.create_volume(rados_cluster, POOL, EXTRA, 8 * MiB)
    actions.add_disk(rt.state, "rbdvm", Disk(volume=extra))
    wait_until("the disk plugged in", lambda: extra in rt.state.vm_status(spec.uuid).volumes, 30, interval=0.2)
    listed = subprocess.run(
        ["virsh", "-c", rt.libvirt_uri(node), "domblklist", spec.uuid], capture_output=True, text=True, check=True
    ).stdout
    assert re.search(rf"^\s*vda\s+{POOL}/{DISK}\s*$", listed, re.M), listed
    assert re.search(rf"^\s*vdb\s+{extra}\s*$", listed, re.M), listed
    assert rt.state.vm_status(spec.uuid).pending == []

    other = define_rbd_vm(rt, "rbdvm-other", node, volume="rbdvm-other-disk")
    with pytest.raises(Conflict, match=f"volume {extra} is a disk of VM 'rbdvm': remove it from that VM first"):
        actions.add_disk(rt.state, other.uuid, Disk(volume=extra))
    actions.remove_vm(rt.state, other.uuid)
    with pytest.raises(TransitionError, match="VM rbdvm is running: stop it before removing it with its disks"):
        remove.remove_vm(rt.state, Connection(str(ceph.conf)), "rbdvm", delete_disks=True)
    with pytest.raises(
        TransitionError,
        match=re.escape("VM 'rbdvm' is running (it wants start): stop it before renaming it (pvc vm stop rbdvm)"),
    ):
        actions.rename_vm(rt.state, "rbdvm", "renamed")

    # unplugged: a guest without an OS never releases a PCIe device, so the status says it waits for that
    actions.remove_disk(rt.state, "rbdvm", extra)

    def unplugged_or_waiting() -> bool:
        status = rt.state.vm_status(spec.uuid)
        if extra in status.volumes:
            return any(extra in line and "waiting for the guest" in line for line in status.pending)
        return True

    wait_until("the disk unplugged, or its release awaited", unplugged_or_waiting, 30, interval=0.2)
    assert rt.state.find_vm("rbdvm").definition.volumes == [f"{POOL}/{DISK}"]


def test_a_vm_whose_disk_locks_cannot_be_checked_waits(rbd_runtime, rados_cluster):
    """The node cannot reach Ceph (nftables drops its traffic to the monitor): the lock check before the start fails
    closed — the VM does not start, its status says why, and it stays `start` (not `fail`); once Ceph is reachable
    the next pass starts it."""
    import subprocess

    rt = rbd_runtime
    volume = "rbdvm-unverified"
    if volume in [v.name for v in volumes.list_volumes(rados_cluster, POOL)]:
        volumes.remove_volume(rados_cluster, POOL, volume)
    volumes.create_volume(rados_cluster, POOL, volume, 16 * MiB)
    ns = rt.lab.ns("n2")
    nft = ["ip", "netns", "exec", ns, "nft"]
    subprocess.run(
        [*nft, "add table inet cut; add chain inet cut out { type filter hook output priority 0; }"], check=True
    )
    subprocess.run([*nft, f"add rule inet cut out ip daddr {rt.ceph.net.address} drop"], check=True)
    try:
        spec = define_rbd_vm(rt, "unverified", "n2", volume)
        actions.change_state(rt.state, "unverified", "start")
        wait_until(
            "the start refused",
            lambda: "cannot verify its disks' locks" in rt.state.vm_status(spec.uuid).reason,
            60,
            interval=0.2,
        )
        assert rt.state.vm_status(spec.uuid).state == "starting" and rt.where(spec.uuid) == []
        assert rt.state.vm(spec.uuid).state == "start"
    finally:
        subprocess.run([*nft, "delete table inet cut"], check=False)
    wait_running(rt, spec.uuid, "n2", timeout=90)


def test_recovery_waits_out_an_unavailable_ceph_and_resumes(rbd_runtime, rados_cluster, ceph):
    """The VM's node loses power while Ceph cannot serve its disk (every OSD but one is down: its placement groups
    are inactive). The fencer powers the node off, but breaking the disk's lock cannot finish: each Ceph call gives
    up at its deadline, the primary goes on (no stall), the VM stays assigned to the fenced node, and a fault says
    the recovery waits. Once the OSDs are back, the recovery resumes by itself and the VM runs elsewhere."""
    rt = rbd_runtime
    volume = "rbdvm-stuck-recovery"
    if volume in [v.name for v in volumes.list_volumes(rados_cluster, POOL)]:
        volumes.remove_volume(rados_cluster, POOL, volume)
    volumes.create_volume(rados_cluster, POOL, volume, 16 * MiB)
    spec = define_rbd_vm(rt, "stuckrec", "n3", volume)
    actions.change_state(rt.state, "stuckrec", "start")
    wait_running(rt, spec.uuid, "n3")
    qemu_io(rt, "n3", spec.uuid, "write -P 0x33 0 1M")  # its QEMU holds the lock
    others = sorted(int(p.name.split(".")[1]) for p in ceph.procs if p.name.startswith("ceph-osd.") and p.alive())
    others.remove(0)
    for osd in others:
        ceph.stop_osd(osd)
    mon_command(rados_cluster, "osd down", ids=[str(o) for o in others])
    try:
        rt.power_loss("n3")
        wait_until("n3 fenced", lambda: rt.state.node("n3").daemon_state == "fenced", 60, interval=0.2)
        fault = wait_until(
            "a fault saying the recovery waits",
            lambda: next((f for f in rt.state.faults() if f.id == "recover-failed-n3"), None),
            90,
            interval=0.5,
        )
        assert "stuckrec" in fault.message, fault
        record = rt.state.node("n3")
        assert record.fence.state == "off" and not record.fence.recovered, record.fence
        assert rt.state.vm(spec.uuid).node == "n3" and rt.where(spec.uuid) == []
        assert not [f for f in rt.state.faults() if f.kind == "primary-stalled"]
    finally:
        for osd in others:
            ceph.start_osd(osd)
    wait_until("every PG active+clean", lambda: _clean(rados_cluster), 120, interval=0.5)
    wait_until("the recovery done", lambda: rt.state.node("n3").fence.recovered, 120, interval=0.5)
    new_node = rt.state.vm(spec.uuid).node
    assert new_node in ("n1", "n2")
    wait_running(rt, spec.uuid, new_node, timeout=90)
    assert all(f.id != "recover-failed-n3" for f in rt.state.faults())


class _fresh_volume:  # a context manager used like a function
    def __init__(self, cluster) -> None:
        self.cluster = cluster

    def __enter__(self):
        existing = [v.name for v in volumes.list_volumes(self.cluster, POOL)]
        if DISK in existing:
            volumes.remove_volume(self.cluster, POOL, DISK)
        volumes.create_volume(self.cluster, POOL, DISK, 64 * MiB)
        self.cm = volumes.image(self.cluster, POOL, DISK)
        return self.cm.__enter__()

    def __exit__(self, *exc):
        return self.cm.__exit__(*exc)


def _osd_up(cluster, osd_id: int) -> bool:
    return any(o["osd"] == osd_id and o["up"] for o in mon_command(cluster, "osd dump")["osds"])


def _clean(cluster) -> bool:
    pg = mon_command(cluster, "pg stat")
    states = pg.get("pg_summary", pg).get("num_pg_by_state", [])
    return bool(states) and all(s["name"] == "active+clean" for s in states)
