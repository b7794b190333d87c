"""PVCDATA on real disks (loop devices): made on a blank disk, reused with its data, repaired from a backup superblock
with its data intact, never reformatted, and allow_wipe effective only on a disk that never carried PVC's data. The
real wipefs, blkid, sgdisk, mkfs.ext4 and e2fsck run; PVCDATA is mounted in the test's own folder (no binds)."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from pvc.config.load import load
from pvc.config.schema import DataDisk, Node
from pvc.nodeos.boot import data, disks, probe
from pvc.nodeos.formation import datadisk
from tests.harness.examples import example

CLUSTER = "2a1d1c9e-0000-4000-8000-00000000c0de"
SIZE = 256 * 1024**2


def sh(*argv: str) -> str:
    return subprocess.run(list(argv), check=True, capture_output=True, text=True).stdout


@pytest.fixture
def loops(tmp_path) -> Iterator:
    """make(name) -> a blank loop device (with partition scanning); every one is detached at the end."""
    made: list[str] = []

    def make(name: str) -> str:
        image = tmp_path / f"{name}.img"
        with open(image, "wb") as f:
            f.truncate(SIZE)
        dev = sh("losetup", "--find", "--show", "--partscan", str(image)).strip()
        made.append(dev)
        return dev

    yield make
    for dev in made:
        subprocess.run(["umount", "--recursive", "--lazy", str(tmp_path / "mnt")], capture_output=True)
        subprocess.run(["losetup", "--detach", dev], capture_output=True)


def node(dev: str, allow_wipe: bool = False) -> Node:
    n = load(example("lab-1node")).config.nodes[0]
    # a loop device's kernel name is refused in cluster.toml (it changes between boots): fine for a test
    return n.model_copy(update={"data_disk": DataDisk.model_construct(path=dev, allow_wipe=allow_wipe)})


def found(*devs: str) -> list[disks.Disk]:
    seen = disks.scan([DataDisk.model_construct(path=d) for d in devs])
    return [d for d in seen if d.dev in devs]


def prepare(tmp_path: Path, dev: str, *others: str, allow_wipe: bool = False, cluster: str = CLUSTER, log=None):
    said: list[str] = []
    outcome = data.prepare(
        node(dev, allow_wipe),
        found(dev, *others),
        cluster,
        log=log or said.append,
        boot_disks=frozenset(),
        mount_root=tmp_path / "mnt",
        binds={},
    )
    return outcome, said


def umount(tmp_path: Path) -> None:
    sh("umount", str(tmp_path / "mnt"))


def test_made_reused_and_repaired_with_the_data_intact(tmp_path, loops):
    dev = loops("data")
    made, said = prepare(tmp_path, dev)
    assert made.action == "create" and any("creating PVCDATA" in s for s in said)
    assert sh("blkid", "-p", "-o", "value", "-s", "PART_ENTRY_NAME", str(made.part)).strip() == "PVCDATA"
    marker = json.loads((tmp_path / "mnt" / data.MARKER).read_text())
    assert marker["cluster"] == CLUSTER and marker["node"] == "node1" and marker["created"]
    (tmp_path / "mnt" / "keep").write_text("state of the node")
    umount(tmp_path)

    again, said = prepare(tmp_path, dev, allow_wipe=True)  # allow_wipe left set: PVCDATA is reused, not wiped
    assert again.action == "mount" and again.part == made.part
    assert (tmp_path / "mnt" / "keep").read_text() == "state of the node"
    assert again.identity.created == made.identity.created
    umount(tmp_path)

    # the primary superblock is destroyed: blkid no longer sees ext4, e2fsck repairs it from a backup
    sh("dd", "if=/dev/zero", f"of={made.part}", "bs=1024", "seek=1", "count=1", "conv=notrunc,fsync", "status=none")
    assert "TYPE" not in probe.superblock(str(made.part))
    fixed, said = prepare(tmp_path, dev, allow_wipe=True)
    assert fixed.action == "repair" and any("repaired PVCDATA" in s for s in said), said
    assert (tmp_path / "mnt" / "keep").read_text() == "state of the node"
    umount(tmp_path)


def test_a_pvcdata_beyond_repair_stops_the_node_and_is_not_reformatted(tmp_path, loops):
    dev = loops("data")
    made, _ = prepare(tmp_path, dev)
    umount(tmp_path)
    # every superblock the repair would try, and the group descriptors, are gone
    sh("dd", "if=/dev/zero", f"of={made.part}", "bs=1M", "count=200", "conv=notrunc,fsync", "status=none")
    with pytest.raises(data.DataHalt, match=r"could not repair it.*Nothing was reformatted; this node stops here"):
        prepare(tmp_path, dev, allow_wipe=True)
    found = probe.superblock(str(made.part))
    assert "TYPE" not in found and found["PART_ENTRY_NAME"] == "PVCDATA"  # no mkfs; the partition keeps its name


def test_allow_wipe_only_takes_a_foreign_disk_and_only_with_no_pvcdata_anywhere(tmp_path, loops):
    dev = loops("foreign")
    sh("mkfs.ext4", "-q", "-F", "-L", "olddata", dev)
    with pytest.raises(data.DataError, match=r"is not blank \(found: ext4\).*nothing was written"):
        prepare(tmp_path, dev)
    assert sh("blkid", "-p", "-o", "value", "-s", "LABEL", dev).strip() == "olddata"  # untouched

    holder = loops("holder")
    prepare(tmp_path, holder)
    umount(tmp_path)
    with pytest.raises(data.DataError, match=f"has its PVCDATA on disk {holder}"):
        prepare(tmp_path, dev, holder, allow_wipe=True)
    assert sh("blkid", "-p", "-o", "value", "-s", "LABEL", dev).strip() == "olddata"

    said: list[str] = []
    wiped, _ = prepare(tmp_path, dev, allow_wipe=True, log=said.append)
    assert wiped.action == "create" and wiped.identity.wiped == ("ext4",)
    assert any("allow_wipe: wiping disk" in s and "found: ext4" in s for s in said), said
    umount(tmp_path)


def test_pvc_disks_are_never_wiped_and_other_clusters_pvcdata_is_refused(tmp_path, loops):
    config = loops("config")
    sh("mkfs.ext4", "-q", "-F", "-L", "PVCCONFIG", config)
    with pytest.raises(data.DataError, match=r"carries filesystem label PVCCONFIG.*never wiped"):
        prepare(tmp_path, config, allow_wipe=True)
    assert sh("blkid", "-p", "-o", "value", "-s", "LABEL", config).strip() == "PVCCONFIG"

    theirs = loops("theirs")
    prepare(tmp_path, theirs, cluster="another-cluster-fsid")
    umount(tmp_path)
    with pytest.raises(data.DataError, match=r"belongs to node 'node1' \(cluster fsid another-cluster-fsid\)"):
        prepare(tmp_path, theirs, allow_wipe=True)
    assert not data.is_mounted(tmp_path / "mnt")


def test_an_interrupted_first_boot_is_finished(tmp_path, loops):
    dev = loops("half")
    sh("sgdisk", "--clear", "--new=1:0:0", f"--change-name=1:{data.NEW_LABEL}", "--typecode=1:8300", dev)
    sh("partx", "--update", dev)
    done, said = prepare(tmp_path, dev)
    assert done.action == "format" and any("interrupted first boot" in s for s in said)
    assert sh("blkid", "-p", "-o", "value", "-s", "PART_ENTRY_NAME", str(done.part)).strip() == "PVCDATA"
    umount(tmp_path)


def test_the_cluster_records_the_disk_and_a_moved_pvcdata_raises_a_fault(tmp_path, loops, state):
    dev = loops("data")
    made, _ = prepare(tmp_path, dev)
    umount(tmp_path)
    n = node(dev, allow_wipe=True)
    assert datadisk.record(state, n, made) == []
    rec = state.data_disk("node1")
    assert rec is not None and rec.serial == made.identity.serial and rec.created == made.identity.created

    reused, _ = prepare(tmp_path, dev, allow_wipe=True)
    umount(tmp_path)
    notes = datadisk.record(state, n, reused)
    assert any("allow_wipe is still set for node 'node1'" in s and "remove it" in s for s in notes), notes

    moved = data.Outcome("create", Path("/dev/vdz1"), data.Identity(CLUSTER, "node1", "NEWSERIAL", "m", 1, 2.0))
    notes = datadisk.record(state, node(dev), moved)
    assert any("now on disk serial 'NEWSERIAL'" in s for s in notes), notes
    assert any(f.kind == "data-disk-changed" and f.node == "node1" for f in state.faults())
    assert state.data_disk("node1").serial == "NEWSERIAL"
