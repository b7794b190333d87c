"""Disks and the selectors of cluster.toml (model/serial/size/path), matched against facts from sysfs.

`matches` is pure; `scan` and `partition_node` read /sys and /dev.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from pvc.config.schema import DiskSelector

SYS = Path("/sys")
DEV = Path("/dev")
SKIP_PREFIXES = ("loop", "ram", "zram", "dm-", "md", "sr", "nbd", "rbd")


@dataclass(frozen=True)
class Disk:
    name: str  # kernel name, e.g. sda, loop3
    dev: str  # the device node to open
    size: int  # bytes
    model: str = ""
    serial: str = ""
    paths: tuple[str, ...] = field(default_factory=tuple)  # every /dev path known for it (links, bound nodes)
    major_minor: str = ""


def matches(sel: DiskSelector, disk: Disk) -> bool:
    if sel.model is not None and not fnmatch.fnmatchcase(disk.model, sel.model):
        return False
    if sel.serial is not None and not fnmatch.fnmatchcase(disk.serial, sel.serial):
        return False
    if sel.size_min is not None and disk.size < sel.size_min:
        return False
    if sel.size_max is not None and disk.size > sel.size_max:
        return False
    return not (sel.path is not None and not any(fnmatch.fnmatchcase(p, sel.path) for p in disk.paths))


def describe(sel: DiskSelector) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in sel.model_dump().items() if v is not None and k in _CRITERIA)


_CRITERIA = ("model", "serial", "size_min", "size_max", "path")


def _read(path: Path) -> str:
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _facts(sysdir: Path, dev: str, paths: list[str]) -> Disk | None:
    name = sysdir.resolve().name
    if (sysdir / "partition").exists():
        return None
    sectors = _read(sysdir / "size")
    return Disk(
        name=name,
        dev=dev,
        size=int(sectors or 0) * 512,
        model=_read(sysdir / "device" / "model"),
        serial=_read(sysdir / "device" / "serial") or _read(sysdir / "serial"),
        paths=tuple(sorted(set(paths))),
        major_minor=_read(sysdir / "dev"),
    )


def _rdev(path: str) -> str | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISBLK(st.st_mode):
        return None
    return f"{os.major(st.st_rdev)}:{os.minor(st.st_rdev)}"


def scan(selectors: list[DiskSelector], sys_root: Path = SYS) -> list[Disk]:
    """Every whole disk the node can see: the kernel's disks, plus whatever the selectors' path globs name
    (links under /dev/disk/by-*, or device nodes a container manager bound there)."""
    aliases: dict[str, list[str]] = {}  # major:minor -> /dev paths
    for base in ("/dev/disk/by-id", "/dev/disk/by-path", "/dev/disk/by-label"):
        for path in glob.glob(base + "/*"):
            if (mm := _rdev(path)) is not None:
                aliases.setdefault(mm, []).append(path)
    for sel in selectors:
        for path in glob.glob(sel.path) if sel.path else []:
            if (mm := _rdev(path)) is not None:
                aliases.setdefault(mm, []).append(path)
    found: dict[str, Disk] = {}
    block = sys_root / "block"
    for sysdir in sorted(block.iterdir()) if block.is_dir() else []:
        mm = _read(sysdir / "dev")
        node = f"/dev/{sysdir.name}"
        own = [node] if os.path.exists(node) else []
        if sysdir.name.startswith(SKIP_PREFIXES) and mm not in aliases:
            continue
        paths = own + aliases.get(mm, [])
        if not paths:
            continue
        disk = _facts(sysdir, paths[0], paths)
        if disk is not None:
            found[mm] = disk
    for mm, paths in aliases.items():  # bound nodes whose sysfs entry is only reachable through /sys/dev/block
        if mm not in found and (sysdir := sys_root / "dev" / "block" / mm).exists():
            disk = _facts(sysdir, paths[0], paths)
            if disk is not None:
                found[mm] = disk
    return sorted(found.values(), key=lambda d: d.name)


def select(sel: DiskSelector, disks: list[Disk], count: int | None = None) -> list[Disk]:
    hits = [d for d in disks if matches(sel, d)]
    return hits[:count] if count else hits


def partitions(disk: Disk, sys_root: Path = SYS, dev_root: Path = DEV) -> list[tuple[int, Path]]:
    """(number, device node) of every partition the kernel knows on `disk`. A container's /dev has no udev: the
    partitions' nodes and the disk's kernel-named node (blkid needs it to read partition entries) are created."""
    if not disk.major_minor:
        return []
    sysdir = sys_root / "dev" / "block" / disk.major_minor
    out = []
    for child in sorted(sysdir.iterdir()) if sysdir.is_dir() else []:
        number = _read(child / "partition")
        if number.isdigit():
            ensure_node(dev_root / sysdir.resolve().name, disk.major_minor)
            out.append((int(number), ensure_node(dev_root / child.name, _read(child / "dev"))))
    return sorted(out)


def partition_node(disk: Disk, number: int, sys_root: Path = SYS, dev_root: Path = DEV) -> Path | None:
    """The device node of partition `number` of `disk`, once the kernel has it."""
    return next((node for n, node in partitions(disk, sys_root, dev_root) if n == number), None)


def whole_disk(major_minor: str, sys_root: Path = SYS) -> str:
    """major:minor of the disk `major_minor` is a partition of (itself when it is a whole disk)."""
    sysdir = sys_root / "dev" / "block" / major_minor
    if (sysdir / "partition").exists():
        return _read(sysdir.resolve().parent / "dev") or major_minor
    return major_minor


def ensure_node(node: Path, major_minor: str) -> Path:
    """`node` as a block device node for `major_minor`. One left from before the kernel re-read a partition table
    can name a device that no longer exists (a loop device's partitions get new minors): it is replaced."""
    major, minor = (int(x) for x in major_minor.split(":"))
    want = os.makedev(major, minor)
    try:
        st = node.lstat()
        if stat.S_ISBLK(st.st_mode) and st.st_rdev == want:
            return node
        node.unlink()
    except FileNotFoundError:
        pass
    os.mknod(node, 0o660 | stat.S_IFBLK, want)
    return node
