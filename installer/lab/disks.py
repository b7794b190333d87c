"""A lab node's disks: sparse files for data and OSDs (and a blank spare on containers), a small ext4 disk labelled
PVCCONFIG holding cluster.toml, and, for the container backend, loop devices bound where udev would link them
(/dev/disk/by-id/virtio-pvc-KIND-NODE, the names the example configs' selectors match)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from pvc.config import lab_hardware as hw
from pvc.config.schema import ClusterFile, Node
from pvc.installer.lab.command import sh
from pvc.installer.lab.state import Disks

DATA_DISK_SIZE = 8 * 1024**3
OSD_DISK_SIZE = 12 * 1024**3
SPARE_DISK_SIZE = 8 * 1024**3
CONFIG_DISK_SIZE = 16 * 1024**2


def sparse(path: Path, size: int) -> None:
    with open(path, "wb") as f:
        f.truncate(size)


def losetup(path: Path) -> str:
    return sh("losetup", "--find", "--show", "--partscan", str(path)).strip()


def config_disk(path: Path, config: Path, cfg: ClusterFile) -> None:
    """An ext4 filesystem labelled PVCCONFIG holding cluster.toml and the files it names (join key file). ext4, not
    vfat: the lab host's kernel may lack vfat, and an ext4 image has no boot sector a BIOS could try to boot."""
    path.unlink(missing_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        shutil.copy(config, Path(tmp) / "cluster.toml")
        if cfg.cluster.join_key_file is not None:
            key = config.parent / str(cfg.cluster.join_key_file)
            (Path(tmp) / key.relative_to(config.parent)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(key, Path(tmp) / key.relative_to(config.parent))
        sparse(path, CONFIG_DISK_SIZE)
        sh("mke2fs", "-q", "-t", "ext4", "-L", "PVCCONFIG", "-d", tmp, str(path))


def create(ndir: Path, node: Node, config: Path, cfg: ClusterFile) -> Disks:
    """The disk files every backend gives a node."""
    sparse(ndir / "data.img", DATA_DISK_SIZE)
    osds = [ndir / f"osd{i}.img" for i, _ in enumerate(node.osds)]
    for path in osds:
        sparse(path, OSD_DISK_SIZE)
    config_disk(ndir / "config.img", config, cfg)
    return Disks(data=str(ndir / "data.img"), osds=[str(p) for p in osds], config=str(ndir / "config.img"))


def attach(ndir: Path, name: str, disks: Disks, loops: list[str]) -> list[tuple[str, str]]:
    """Container backend: a loop device per disk (appended to `loops` as soon as it exists, so `down` can detach
    it whatever fails next), and where each is bound in the node."""
    binds = []

    def loop(path: Path | str, target: str) -> None:
        dev = losetup(Path(path))
        loops.append(dev)
        binds.append((dev, target))

    loop(disks.data, hw.disk_by_id("data", name))
    sparse(ndir / "spare0.img", SPARE_DISK_SIZE)  # blank, for trying `pvc storage osd add`
    loop(ndir / "spare0.img", hw.disk_by_id("spare0", name))
    for i, path in enumerate(disks.osds):
        loop(path, hw.disk_by_id(f"osd{i}", name))
    loop(disks.config, "/dev/disk/by-label/PVCCONFIG")
    if os.path.exists("/dev/kvm"):
        binds.append(("/dev/kvm", "/dev/kvm"))
    return binds
