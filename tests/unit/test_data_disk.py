"""PVCDATA at boot, fail-closed (security review H9, M14): what the probes report, with failures injected at the
subprocess seam (`probe.Runner`), and the decision that follows (`data.decide`, a pure function). The same code runs
on real loop devices in tests/component/test_data_disk.py and at boot in the container lab (tests/system)."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from pathlib import Path

import pytest

from pvc.config.load import load
from pvc.config.schema import Node
from pvc.nodeos.boot import data, disks, probe
from pvc.nodeos.boot.probe import Facts, Part, Ran
from pvc.nodeos.formation import ceph
from pvc.nodeos.formation.machinery import StepFailed
from tests.harness.examples import example


def node(allow_wipe: bool = False) -> Node:
    cfg = load(example("lab-1node")).config
    n = cfg.nodes[0]
    return n.model_copy(update={"data_disk": n.data_disk.model_copy(update={"allow_wipe": allow_wipe})})


DISK = disks.Disk(
    name="vdb", dev="/dev/vdb", size=8 * 1024**3, model="QEMU", serial="pvc-data-node1", major_minor="252:16"
)
OTHER = disks.Disk(name="vdc", dev="/dev/vdc", size=12 * 1024**3, serial="pvc-osd0-node1", major_minor="252:32")


class FakeRunner:
    """The subprocess seam: answers wipefs and blkid as a disk would, or fails the calls it is told to."""

    def __init__(self, answers: dict[tuple[str, str], Ran]) -> None:
        self.answers = answers
        self.calls: list[list[str]] = []

    def __call__(self, argv: Sequence[str]) -> Ran:
        self.calls.append(list(argv))
        return self.answers.get((argv[0], argv[-1]), Ran(2 if argv[0] == "blkid" else 0, ""))


def fake_sys(tmp_path: Path, disk: disks.Disk, parts: int) -> tuple[Path, Path]:
    """A /sys with `disk` and `parts` partitions, and a /dev where their nodes already exist (no mknod)."""
    sys_root, dev_root = tmp_path / "sys", tmp_path / "dev"
    block = sys_root / "block" / disk.name
    block.mkdir(parents=True)
    (block / "dev").write_text(disk.major_minor)
    major, minor = disk.major_minor.split(":")
    (sys_root / "dev" / "block").mkdir(parents=True)
    (sys_root / "dev" / "block" / disk.major_minor).symlink_to(block)
    dev_root.mkdir()
    (dev_root / disk.name).touch()
    for n in range(1, parts + 1):
        (block / f"{disk.name}{n}").mkdir()
        (block / f"{disk.name}{n}" / "partition").write_text(str(n))
        (block / f"{disk.name}{n}" / "dev").write_text(f"{major}:{int(minor) + n}")
        (sys_root / "dev" / "block" / f"{major}:{int(minor) + n}").symlink_to(block / f"{disk.name}{n}")
        (dev_root / f"{disk.name}{n}").touch()
    return sys_root, dev_root


def probed(tmp_path: Path, answers: dict[tuple[str, str], Ran], parts: int = 1, boot=frozenset()) -> Facts:
    sys_root, dev_root = fake_sys(tmp_path, DISK, parts)
    return probe.probe(DISK, FakeRunner(answers), boot, sys_root, dev_root)


PVCDATA_PART = "DEVNAME={dev}\nTYPE=ext4\nLABEL=PVCDATA\nPART_ENTRY_SCHEME=gpt\nPART_ENTRY_NAME=PVCDATA\n"


# -- the probes fail closed ---------------------------------------------------------------------------------------
def test_a_failed_wipefs_is_an_error_not_blank(tmp_path):
    facts = probed(
        tmp_path, {("wipefs", "/dev/vdb"): Ran(1, "", "wipefs: error: /dev/vdb: probing initialization failed")}, 0
    )
    assert facts.errors and "wipefs" in facts.errors[0] and "probing initialization failed" in facts.errors[0]
    assert not facts.blank
    with pytest.raises(data.DataError, match=r"cannot tell what is on disk /dev/vdb.*never treated as blank"):
        data.decide(node(allow_wipe=True), facts, [])


@pytest.mark.parametrize(
    "answer",
    [
        Ran(-1, "", "did not finish in 60 s"),  # a timeout (system_run's answer)
        Ran(-1, "", "cannot run wipefs: No such file or directory"),
        Ran(0, "gpt\n<garbage>\n"),  # exit 0, but output that is not a list of signature types
    ],
)
def test_wipefs_timeouts_missing_programs_and_odd_output_are_errors(answer):
    with pytest.raises(probe.ProbeError):
        probe.signatures("/dev/vdb", FakeRunner({("wipefs", "/dev/vdb"): answer}))


def test_blkid_failures_are_errors_and_exit_2_is_nothing_found(tmp_path):
    run = FakeRunner({("blkid", "/dev/x"): Ran(8, "", "ambivalent result")})
    with pytest.raises(probe.ProbeError, match="exit 8"):
        probe.superblock("/dev/x", run)
    assert probe.superblock("/dev/y", FakeRunner({})) == {}  # exit 2: blkid found nothing
    with pytest.raises(probe.ProbeError, match="not KEY=value"):
        probe.superblock("/dev/z", FakeRunner({("blkid", "/dev/z"): Ran(0, "TYPE=ext4\nsomething odd\n")}))


def test_a_failed_partition_probe_keeps_the_disk_from_being_wiped(tmp_path):
    facts = probed(
        tmp_path,
        {("wipefs", "/dev/vdb"): Ran(0, "gpt\nPMBR\n"), ("blkid", str(tmp_path / "dev/vdb1")): Ran(4, "", "I/O error")},
    )
    assert facts.errors and "I/O error" in facts.errors[0]
    with pytest.raises(data.DataError, match="cannot tell"):
        data.decide(node(allow_wipe=True), facts, [])


def test_a_partition_that_cannot_be_opened_is_an_error_though_blkid_says_nothing(tmp_path):
    """blkid -p exits 2, "nothing found", for a device node it cannot open (a stale node in a container whose loop
    partitions got new minors): the node's PVCDATA must never look like a foreign disk allow_wipe may take."""
    part = str(tmp_path / "dev/vdb1")
    facts = probed(
        tmp_path,
        {
            ("wipefs", "/dev/vdb"): Ran(0, "gpt\ngpt\nPMBR\n"),
            ("wipefs", part): Ran(1, "", f"wipefs: error: {part}: probing initialization failed: No such device"),
            ("blkid", part): Ran(2, ""),
        },
    )
    assert facts.errors and "No such device" in facts.errors[0]
    with pytest.raises(data.DataError, match="cannot tell what is on disk"):
        data.decide(node(allow_wipe=True), facts, [])
    with pytest.raises(probe.ProbeError, match="No such device or address"):
        probe.superblock(
            "/dev/x", FakeRunner({("blkid", "/dev/x"): Ran(2, "", "blkid: error: /dev/x: No such device or address")})
        )


def test_a_stale_device_node_is_replaced(tmp_path):
    node = tmp_path / "loop2p1"
    disks.ensure_node(node, "7:99")
    assert os.major(node.stat().st_rdev) == 7 and os.minor(node.stat().st_rdev) == 99
    disks.ensure_node(node, "259:3")  # the kernel re-read the table: the partition is another device now
    assert (os.major(node.stat().st_rdev), os.minor(node.stat().st_rdev)) == (259, 3)
    (tmp_path / "plain").touch()
    assert stat.S_ISBLK(disks.ensure_node(tmp_path / "plain", "259:4").stat().st_mode)


def test_blank_means_every_probe_answered_and_found_nothing(tmp_path):
    facts = probed(tmp_path, {}, 0)
    assert facts.blank and not facts.errors
    assert data.decide(node(), facts, []) == data.Plan("create", facts)


def test_an_existing_pvcdata_is_found_on_any_partition(tmp_path):
    dev2 = str(tmp_path / "dev/vdb2")
    facts = probed(
        tmp_path,
        {("wipefs", "/dev/vdb"): Ran(0, "gpt\nPMBR\n"), ("blkid", dev2): Ran(0, PVCDATA_PART.format(dev=dev2))},
        2,
    )
    plan = data.decide(node(allow_wipe=True), facts, [])
    assert plan.action == "mount" and plan.part is not None and plan.part.dev == dev2


# -- the decision ---------------------------------------------------------------------------------------------------
def facts(sigs=(), parts=(), boot=False, errors=(), disk=DISK) -> Facts:
    return Facts(disk, tuple(sigs), tuple(parts), boot, tuple(errors))


def test_allow_wipe_wipes_a_foreign_disk_on_first_boot_only():
    foreign = facts(["gpt", "PMBR"], [Part(1, "/dev/vdb1", "xfs", "olddata", "primary")])
    with pytest.raises(data.DataError, match=r"not blank.*set data_disk.allow_wipe"):
        data.decide(node(), foreign, [])
    plan = data.decide(node(allow_wipe=True), foreign, [facts(disk=OTHER)])
    assert plan.action == "create" and plan.wipe == ("gpt", "PMBR")
    # once PVCDATA exists the same disk is reused, whatever allow_wipe says
    made = facts(["gpt", "PMBR"], [Part(1, "/dev/vdb1", "ext4", "PVCDATA", "PVCDATA")])
    assert data.decide(node(allow_wipe=True), made, []).action == "mount"


def test_allow_wipe_never_applies_while_the_node_has_pvcdata_elsewhere():
    """A re-enumerated or replaced disk makes the selector pick another disk: the node's PVCDATA still exists."""
    foreign = facts(["dos"], [Part(1, "/dev/vdb1", "ext4", "backup")])
    holder = facts(["gpt"], [Part(1, "/dev/vdc1", "ext4", "PVCDATA", "PVCDATA")], disk=OTHER)
    with pytest.raises(data.DataError, match=r"has its PVCDATA on disk /dev/vdc.*Fix the selector"):
        data.decide(node(allow_wipe=True), foreign, [holder])
    with pytest.raises(data.DataError, match="has its PVCDATA on disk /dev/vdc"):
        data.decide(node(), facts(), [holder])  # not even on a blank disk: the node would fork its state


def test_allow_wipe_refuses_when_another_disk_could_not_be_probed():
    foreign = facts(["dos"], [Part(1, "/dev/vdb1", "ext4", "backup")])
    unknown = facts(errors=["`wipefs ... /dev/vdc` failed (exit 1)"], disk=OTHER)
    with pytest.raises(data.DataError, match="could not be probed and may hold this node's PVCDATA"):
        data.decide(node(allow_wipe=True), foreign, [unknown])


@pytest.mark.parametrize(
    ("found", "why"),
    [
        (facts(["ceph_bluestore"]), "a Ceph OSD"),
        (facts(["gpt"], [Part(1, "/dev/vdb1", "vfat", "PVCBOOT", "EFI")]), "filesystem label PVCBOOT"),
        (facts(["ext4"], [Part(0, "/dev/vdb", "ext4", "PVCCONFIG")]), "filesystem label PVCCONFIG"),
        (facts(["gpt"], [Part(2, "/dev/vdb2", "", "", "PVC-something")]), "partition name PVC-something"),
        (facts(["gpt"], [Part(1, "/dev/vdb1", "ceph_bluestore")]), "a Ceph OSD"),
    ],
)
def test_pvc_and_ceph_disks_are_never_wiped(found, why):
    with pytest.raises(data.DataError, match=rf"carries {why}.*never wiped, whatever data_disk.allow_wipe says"):
        data.decide(node(allow_wipe=True), found, [])


def test_the_boot_medium_is_never_a_candidate(tmp_path):
    stick = facts(["iso9660"], [Part(0, "/dev/vdb", "iso9660", "Debian")], boot=True)
    with pytest.raises(data.DataError, match="holds the medium this node booted from"):
        data.decide(node(allow_wipe=True), stick, [])
    sys_root, _ = fake_sys(tmp_path, DISK, 2)
    mountinfo = (
        "24 1 0:22 / / rw - overlay overlay rw\n"
        "30 24 252:18 / /run/live/medium ro,noatime - vfat /dev/vdb2 ro\n"
        "31 24 252:33 / /var/pvcdata rw - ext4 /dev/vdc1 rw\n"
    )
    assert probe.boot_medium_disks(mountinfo, sys_root) == frozenset({"252:16"})  # partition 2 → its disk
    assert probe.boot_medium_disks("24 1 0:22 / / rw - overlay overlay rw\n", sys_root) == frozenset()  # PXE


def test_a_damaged_pvcdata_is_repaired_never_reformatted():
    damaged = facts(["gpt", "PMBR"], [Part(1, "/dev/vdb1", "", "", "PVCDATA")])
    assert data.decide(node(), damaged, []).action == "repair"
    interrupted = facts(["gpt", "PMBR"], [Part(1, "/dev/vdb1", "", "", "PVCDATA-NEW")])
    assert data.decide(node(), interrupted, []).action == "format"  # only the -NEW name proves it never held data
    wrong = facts(["gpt"], [Part(1, "/dev/vdb1", "xfs", "", "PVCDATA")])
    with pytest.raises(data.DataError, match="holds a xfs filesystem"):
        data.decide(node(allow_wipe=True), wrong, [])


# -- the OSD path fails closed too ---------------------------------------------------------------------------------
def test_osd_probes_fail_closed():
    failing = FakeRunner({("wipefs", "/dev/vdc"): Ran(1, "", "cannot open /dev/vdc: Input/output error")})
    with pytest.raises(StepFailed, match=r"cannot tell what is on OSD disk /dev/vdc.*Input/output error"):
        ceph.disk_signatures("/dev/vdc", failing)
    unreadable = FakeRunner({("ceph-bluestore-tool", "/dev/vdc"): Ran(1, "", "unable to read label")})
    with pytest.raises(StepFailed, match=r"bluestore label that cannot be read.*unable to read label"):
        ceph.bluestore_label("/dev/vdc", ["ceph_bluestore"], unreadable)
    garbled = FakeRunner({("ceph-bluestore-tool", "/dev/vdc"): Ran(0, '{"/dev/vdc": {"osd_uuid": "x"}}')})
    with pytest.raises(StepFailed, match="no ceph_fsid/whoami"):
        ceph.bluestore_label("/dev/vdc", ["ceph_bluestore"], garbled)
    assert ceph.bluestore_label("/dev/vdc", [], failing) is None  # no label: the blank check decides
    label = '{"/dev/vdc": {"ceph_fsid": "f", "whoami": "3"}}'
    good = FakeRunner({("ceph-bluestore-tool", "/dev/vdc"): Ran(0, label)})
    assert ceph.bluestore_label("/dev/vdc", ["ceph_bluestore"], good) == {"ceph_fsid": "f", "whoami": "3"}
