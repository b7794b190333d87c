"""What is on a disk, probed fail-closed: a probe that fails (exit status, unreadable output, a timeout) is an error,
and a disk with an error is never "blank" (security review H9).

Every command goes through a `Runner`, the seam the unit tests replace to inject failures; `system_run` is the real
one. The facts are plain data (`Facts`); deciding what to do with them is data.decide, a pure function.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from pvc.nodeos.boot import disks

PROBE_TIMEOUT = 60.0  # seconds for one wipefs/blkid call (a disk that does not answer in a minute is not blank)
LIVE_MEDIUM = "/run/live/medium"  # where live-boot mounts the USB stick or ISO the node booted from
BLUESTORE = "ceph_bluestore"  # libblkid's name for a Ceph OSD's bluestore label
PVC_PREFIX = "PVC"  # PVCDATA, PVCBOOT, PVCCONFIG, PVCLIVE: PVC's own labels and GPT partition names

_TYPE_RE = re.compile(r"^[\w.-]+$")  # a signature type as wipefs prints it: gpt, PMBR, ext4, ceph_bluestore, ...


@dataclass(frozen=True)
class Ran:
    code: int
    out: str
    err: str = ""


Runner = Callable[[Sequence[str]], Ran]


def system_run(argv: Sequence[str]) -> Ran:
    """Run a probe command; a timeout or a missing program is a failed run (code -1), never an exception."""
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=PROBE_TIMEOUT)
    except subprocess.TimeoutExpired:
        return Ran(-1, "", f"did not finish in {PROBE_TIMEOUT:.0f} s")
    except OSError as exc:
        return Ran(-1, "", f"cannot run {argv[0]}: {exc.strerror}")
    return Ran(out.returncode, out.stdout, out.stderr)


class ProbeError(Exception):
    """A probe failed: what the device holds is unknown, so it counts as not blank."""


def _failed(argv: Sequence[str], ran: Ran) -> ProbeError:
    why = (ran.err or ran.out).strip().splitlines()
    return ProbeError(f"`{' '.join(argv)}` failed (exit {ran.code})" + (f": {why[-1]}" if why else ""))


def signatures(dev: str, run: Runner = system_run) -> list[str]:
    """The partition tables and filesystem signatures wipefs finds on `dev`; [] only when wipefs says it is blank
    (exit 0, no output). ProbeError on any failure or output that is not a list of types."""
    argv = ["wipefs", "--no-act", "--noheadings", "--output", "TYPE", dev]
    ran = run(argv)
    if ran.code != 0:
        raise _failed(argv, ran)
    found = ran.out.split()
    if any(not _TYPE_RE.match(t) for t in found):
        raise ProbeError(f"`{' '.join(argv)}` printed something that is not a signature type: {ran.out.strip()!r}")
    return found


def superblock(dev: str, run: Runner = system_run) -> dict[str, str]:
    """blkid's low-level probe of `dev` (TYPE, LABEL, PART_ENTRY_NAME, ...); {} when blkid finds nothing (exit 2,
    silent). ProbeError on any other failure, including several signatures that contradict each other (exit 8).
    blkid also exits 2 when it cannot open the device (saying so on stderr, or nothing at all for a path that does not
    exist): `probe` runs wipefs on the same device first, which fails on both."""
    argv = ["blkid", "-p", "-o", "export", dev]
    ran = run(argv)
    if ran.code == 2 and not ran.err.strip():
        return {}
    if ran.code != 0:
        raise _failed(argv, ran)
    facts: dict[str, str] = {}
    for line in ran.out.splitlines():
        if not line.strip():
            continue
        key, sep, value = line.partition("=")
        if not sep or not key.isupper():
            raise ProbeError(f"`{' '.join(argv)}` printed a line that is not KEY=value: {line!r}")
        facts[key] = value
    return facts


@dataclass(frozen=True)
class Part:
    """A filesystem or partition on a disk: `number` 0 is the whole disk's own superblock."""

    number: int
    dev: str
    fstype: str = ""
    label: str = ""
    partname: str = ""  # the GPT partition name


@dataclass(frozen=True)
class Facts:
    """What the probes found on one disk. `errors` lists every probe that failed."""

    disk: disks.Disk
    signatures: tuple[str, ...] = ()
    parts: tuple[Part, ...] = ()
    boot_medium: bool = False
    errors: tuple[str, ...] = ()

    @property
    def blank(self) -> bool:
        """Nothing at all: every probe answered and none found a signature, a partition or a filesystem."""
        return not self.errors and not self.signatures and not self.parts and not self.boot_medium

    def marks(self) -> list[str]:
        """What makes this disk PVC's or Ceph's: a PVC* filesystem label or GPT partition name, a bluestore label.
        Such a disk is never wiped, whatever cluster.toml says."""
        out = []
        if BLUESTORE in self.signatures:
            out.append("a Ceph OSD (bluestore label)")
        for p in self.parts:
            if p.fstype == BLUESTORE and BLUESTORE not in self.signatures:
                out.append(f"a Ceph OSD (bluestore label) on {p.dev}")
            if p.label.upper().startswith(PVC_PREFIX):
                out.append(f"filesystem label {p.label} on {p.dev}")
            if p.partname.upper().startswith(PVC_PREFIX):
                out.append(f"partition name {p.partname} on {p.dev}")
        return out

    def describe(self) -> str:
        d = self.disk
        return f"{d.dev} (model {d.model or '?'}, serial {d.serial or '?'}, {d.size // 1024**2} MiB)"


def probe(
    disk: disks.Disk,
    run: Runner = system_run,
    boot_disks: frozenset[str] = frozenset(),
    sys_root: Path = disks.SYS,
    dev_root: Path = disks.DEV,
) -> Facts:
    """Every fact about `disk` the decision needs. Failures are collected in `errors`, not raised: the decision says
    which probe failed. `boot_disks` are the major:minor of the disks holding the running boot medium."""
    errors: list[str] = []
    sigs: list[str] = []
    parts: list[Part] = []
    try:
        sigs = signatures(disk.dev, run)
    except ProbeError as exc:
        errors.append(str(exc))
    devices = [(0, disk.dev)]
    try:
        devices += [(n, str(node)) for n, node in disks.partitions(disk, sys_root, dev_root)]
    except OSError as exc:
        errors.append(f"cannot list the partitions of {disk.dev}: {exc}")
    for number, dev in devices:
        try:
            if number:
                signatures(dev, run)  # a partition node that cannot be opened fails here (blkid would say "nothing")
            sb = superblock(dev, run)
        except ProbeError as exc:
            errors.append(str(exc))
            continue
        part = Part(number, dev, sb.get("TYPE", ""), sb.get("LABEL", ""), sb.get("PART_ENTRY_NAME", ""))
        if number == 0 and not (part.fstype or part.label):
            continue  # a partition table only: wipefs lists it
        parts.append(part)
    return Facts(disk, tuple(sigs), tuple(parts), disk.major_minor in boot_disks, tuple(errors))


def boot_medium_disks(mountinfo: str | None = None, sys_root: Path = disks.SYS) -> frozenset[str]:
    """major:minor of the whole disks under the running boot medium (live-boot's /run/live/medium: the USB stick or
    the ISO). Empty after a PXE boot (the root was fetched into RAM) and in a container. OSError if /proc cannot be
    read: then no disk can be trusted not to be the boot medium."""
    if mountinfo is None:
        mountinfo = Path("/proc/self/mountinfo").read_text()
    found = set()
    for line in mountinfo.splitlines():
        fields = line.split()
        if len(fields) > 4 and fields[4] == LIVE_MEDIUM:
            found.add(disks.whole_disk(fields[2], sys_root))
    return frozenset(found)
