"""PVCDATA: the one persistent partition (DESIGN.md decision 4).

On first boot it is created on the disk the node's `data_disk` selector picks — only if that disk is blank, or
cluster.toml sets `allow_wipe` for that node — and on later boots the existing partition is found and reused.
It is mounted at /var/pvcdata and its folders are bind-mounted over the /var/lib folders of the services.
"""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from pvc.config.schema import Node
from pvc.nodeos.boot import disks

LABEL = "PVCDATA"
MOUNT = Path("/var/pvcdata")
# folder on PVCDATA -> where the service expects it
BINDS = {
    "zookeeper": "/var/lib/zookeeper",
    "ceph": "/var/lib/ceph",
    "postgresql": "/var/lib/postgresql",
    "libvirt": "/var/lib/libvirt",
    "pvc": "/var/lib/pvc",
    "log": "/var/log/pvc",
}


class DataError(Exception):
    """PVCDATA cannot be set up; nothing was written. The message says what to change."""


def run(*argv: str, timeout: float = 300) -> str:
    out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise DataError(f"{' '.join(argv)} failed: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def is_mounted(path: Path) -> bool:
    return any(line.split()[4] == str(path) for line in Path("/proc/self/mountinfo").read_text().splitlines())


def signatures(dev: str) -> list[str]:
    """What `wipefs` finds on the device: partition tables and filesystems. Empty = blank."""
    out = subprocess.run(
        ["wipefs", "--no-act", "--noheadings", "--output", "TYPE", dev], capture_output=True, text=True
    )
    return [t for t in out.stdout.split() if t]


def label_of(dev: Path) -> str:
    out = subprocess.run(["blkid", "-p", "-o", "value", "-s", "LABEL", str(dev)], capture_output=True, text=True)
    return out.stdout.strip()


def choose_disk(node: Node, found: list[disks.Disk]) -> disks.Disk:
    hits = disks.select(node.data_disk, found)
    wanted = disks.describe(node.data_disk)
    if not hits:
        seen = ", ".join(f"{d.dev} ({d.size // 1024**3} GiB, model {d.model or '?'})" for d in found) or "none"
        raise DataError(f"no disk matches nodes '{node.name}' data_disk ({wanted}); disks seen: {seen}")
    if len(hits) > 1:
        raise DataError(
            f"{len(hits)} disks match node '{node.name}' data_disk ({wanted}): {', '.join(d.dev for d in hits)}; "
            "narrow the selector so it picks exactly one"
        )
    return hits[0]


def partlabel_of(dev: Path) -> str:
    out = subprocess.run(
        ["blkid", "-p", "-o", "value", "-s", "PART_ENTRY_NAME", str(dev)], capture_output=True, text=True
    )
    return out.stdout.strip()


def _partition(disk: disks.Disk) -> Path | None:
    """Partition 1 of a freshly partitioned disk, once the kernel knows it (udev is not relied on: a container has
    none, and sgdisk's own re-read can lose a race)."""
    subprocess.run(["partx", "--add", disk.dev], capture_output=True)
    for _ in range(50):
        node = disks.partition_node(disk, 1)
        if node is not None:
            return node
        time.sleep(0.1)
    return None


def prepare(node: Node, found: list[disks.Disk], log: Callable[[str], object] = print) -> Path:
    """Find or create PVCDATA on the node's data disk and mount it. Returns the partition. Raises DataError."""
    disk = choose_disk(node, found)
    part = disks.partition_node(disk, 1)
    if part is not None and label_of(part) == LABEL:
        log(f"data: reusing {LABEL} on {part} ({disk.dev})")
    elif part is not None and partlabel_of(part) == LABEL and not signatures(str(part)):
        log(f"data: finishing {LABEL} on {part}: partitioned by an interrupted first boot")
        run("mkfs.ext4", "-q", "-F", "-L", LABEL, str(part))
    else:
        present = signatures(disk.dev)
        if present and not node.data_disk.allow_wipe:
            raise DataError(
                f"disk {disk.dev} picked by node '{node.name}' data_disk is not blank (found: {', '.join(present)}) "
                f"and holds no {LABEL} partition; nothing was written. Wipe it yourself, or set "
                "data_disk.allow_wipe = true for this node in cluster.toml"
            )
        log(f"data: creating {LABEL} on {disk.dev} ({disk.size // 1024**2} MiB)" + (" after wiping" if present else ""))
        run("wipefs", "--all", disk.dev)
        run("sgdisk", "--clear", "--new=1:0:0", f"--change-name=1:{LABEL}", "--typecode=1:8300", disk.dev)
        part = _partition(disk)
        if part is None:
            raise DataError(f"the kernel shows no partition 1 on {disk.dev} after partitioning it")
        run("mkfs.ext4", "-q", "-F", "-L", LABEL, str(part))
    mount(part)
    return part


def mount(part: Path) -> None:
    MOUNT.mkdir(parents=True, exist_ok=True)
    if not is_mounted(MOUNT):
        run("mount", "-o", "noatime", str(part), str(MOUNT))
    for sub, target in BINDS.items():
        src = MOUNT / sub
        src.mkdir(exist_ok=True)
        Path(target).mkdir(parents=True, exist_ok=True)
        if not is_mounted(Path(target)):
            run("mount", "--bind", str(src), target)
    pg = MOUNT / "postgresql"
    try:
        pw = pwd.getpwnam("postgres")
        os.chown(pg, pw.pw_uid, pw.pw_gid)
    except (KeyError, OSError):
        pass
