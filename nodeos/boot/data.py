"""PVCDATA: the one persistent partition (DESIGN.md decision 4), made and found fail-closed (security review H9, M14).

At every boot the node's `data_disk` selector picks one disk; every disk is probed (probe.py) and `decide`, a pure
function of those facts, says what to do:

- a PVCDATA filesystem is there → check it (`e2fsck -p`) and mount it;
- PVCDATA's partition is there but its filesystem cannot be read → repair it with e2fsck from a backup superblock,
  never reformat it; if that fails the node stops (DataHalt) with a console message;
- a partition named PVCDATA-NEW without a filesystem → an interrupted first boot: format it (only that name, set
  before mkfs and renamed after it, proves the partition never held data);
- the disk is blank → create PVCDATA;
- anything else is refused, unless `allow_wipe` is set and every condition of `wipe_refusal` holds.

A probe that fails makes the disk "not blank"; the boot medium, a disk with a PVC* label or partition name and a disk
with a bluestore label are never wiped. The record of which disk holds the node's PVCDATA lives on the disk itself
(the labels and the MARKER file in it, read before anything else is up) and, once formation reaches ZooKeeper, in the
cluster state (formation/zookeeper.py, docs/storage.md "Disks at boot").
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

from pvc.config.schema import Node
from pvc.nodeos.boot import disks, probe
from pvc.nodeos.boot.probe import Facts, Part, ProbeError, Runner, system_run

LABEL = "PVCDATA"
NEW_LABEL = "PVCDATA-NEW"  # GPT name of a partition made by a first boot and not yet formatted
MOUNT = Path("/var/pvcdata")
MARKER = "pvc-data.json"  # in PVCDATA's root: which cluster, node and disk it belongs to (Identity)
# folder on PVCDATA -> where the service expects it
BINDS = {
    "zookeeper": "/var/lib/zookeeper",
    "ceph": "/var/lib/ceph",
    "postgresql": "/var/lib/postgresql",
    "libvirt": "/var/lib/libvirt",
    "pvc": "/var/lib/pvc",
    "log": "/var/log/pvc",
    "libvirt-cache": "/var/cache/libvirt",  # QEMU's probed capabilities: libvirtd's next start skips the probe
}
FSCK_CORRECTED = 3  # e2fsck's exit bits 1 (errors corrected) and 2 (reboot: only meaningful for a mounted root)
# Where ext4 keeps its first backup superblocks, for each block size: group 1 and group 3 (sparse_super).
BACKUP_SUPERBLOCKS = ((4096, (32768, 98304)), (1024, (8193, 24577)), (2048, (16384, 49152)))


class DataError(Exception):
    """PVCDATA cannot be set up; nothing was written. The message says what to change."""


class DataHalt(DataError):
    """PVCDATA is damaged beyond what PVC repairs by itself: the node stops (pvc-node does not retry)."""


Action = Literal["mount", "repair", "format", "create"]


@dataclass(frozen=True)
class Plan:
    action: Action
    facts: Facts
    part: Part | None = None  # the PVCDATA partition (mount, repair, format)
    wipe: tuple[str, ...] = ()  # create: the signatures allow_wipe removes (empty for a blank disk)


def run(*argv: str, timeout: float = 300) -> str:
    try:
        out = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise DataError(f"{' '.join(argv)} did not finish in {timeout:.0f} s") from None
    if out.returncode != 0:
        raise DataError(f"{' '.join(argv)} failed: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def is_mounted(path: Path) -> bool:
    return any(line.split()[4] == str(path) for line in Path("/proc/self/mountinfo").read_text().splitlines())


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


def pvcdata(facts: Facts) -> Part | None:
    """The disk's PVCDATA: a filesystem labelled PVCDATA, or a partition named PVCDATA or PVCDATA-NEW."""
    return next((p for p in facts.parts if p.label == LABEL or p.partname in (LABEL, NEW_LABEL)), None)


# -- the decision (pure) ------------------------------------------------------------------------------------------
def decide(node: Node, chosen: Facts, others: list[Facts]) -> Plan:
    """What to do with the disk `node`'s data_disk picked, given every disk's facts. DataError says why not."""
    where = chosen.describe()
    if chosen.errors:
        raise DataError(
            f"cannot tell what is on disk {where}, picked by node '{node.name}' data_disk: "
            + "; ".join(chosen.errors)
            + ". A disk that cannot be probed is never treated as blank; nothing was written"
        )
    part = pvcdata(chosen)
    if part is not None:
        if part.fstype == "ext4":
            return Plan("mount", chosen, part)
        if part.fstype:
            raise DataError(
                f"partition {part.dev} on {where} is named {part.partname or part.label} but holds a {part.fstype} "
                "filesystem, not PVC's ext4; nothing was written"
            )
        if part.partname == NEW_LABEL:
            return Plan("format", chosen, part)
        return Plan("repair", chosen, part)
    elsewhere = [f for f in others if pvcdata(f) is not None]
    if elsewhere:
        raise DataError(
            f"node '{node.name}' has its {LABEL} on disk {elsewhere[0].describe()}, but its data_disk selector picks "
            f"{where}; nothing was written. Fix the selector so it picks the disk holding {LABEL}"
        )
    if chosen.boot_medium:
        raise DataError(f"disk {where} holds the medium this node booted from; it is never used for {LABEL}")
    if chosen.blank:
        return Plan("create", chosen)
    marks = chosen.marks()
    if marks:
        raise DataError(
            f"disk {where} picked by node '{node.name}' data_disk carries {', '.join(marks)}; a disk of PVC or "
            "Ceph is never wiped, whatever data_disk.allow_wipe says; nothing was written"
        )
    found = ", ".join(chosen.signatures) or ", ".join(p.fstype or p.partname for p in chosen.parts)
    if not node.data_disk.allow_wipe:
        raise DataError(
            f"disk {where} picked by node '{node.name}' data_disk is not blank (found: {found}) and holds no "
            f"{LABEL} partition; nothing was written. Wipe it yourself, or set data_disk.allow_wipe = true for this "
            "node in cluster.toml"
        )
    unknown = [f.describe() for f in others if f.errors]
    if unknown:
        raise DataError(
            f"data_disk.allow_wipe would wipe {where}, but disk(s) {', '.join(unknown)} could not be probed and may "
            f"hold this node's {LABEL}; nothing was written"
        )
    return Plan("create", chosen, wipe=tuple(chosen.signatures) or (found,))


# -- acting on the plan ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Identity:
    """The MARKER file in PVCDATA's root: the record, on the disk itself, of whose PVCDATA it is."""

    cluster: str  # the cluster's Ceph fsid (derived from the join key)
    node: str
    serial: str
    model: str
    size: int
    created: float | None  # None: a PVCDATA made before the marker existed
    wiped: tuple[str, ...] = ()  # what allow_wipe removed when PVCDATA was created

    @classmethod
    def read(cls, path: Path) -> Identity | None:
        try:
            doc = json.loads(path.read_text())
            return cls(**{**doc, "wiped": tuple(doc.get("wiped", ()))})
        except FileNotFoundError:
            return None
        except (OSError, ValueError, TypeError) as exc:
            raise DataError(f"{path} cannot be read ({exc}); move it away if this is the node's {LABEL}") from None

    def write(self, path: Path) -> None:
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(asdict(self), indent=1) + "\n")
        tmp.replace(path)


@dataclass(frozen=True)
class Outcome:
    action: Action
    part: Path
    identity: Identity


def prepare(
    node: Node,
    found: list[disks.Disk],
    cluster: str,
    log: Callable[[str], object] = print,
    run_probe: Runner = system_run,
    boot_disks: frozenset[str] | None = None,
    mount_root: Path = MOUNT,
    binds: dict[str, str] | None = None,
) -> Outcome:
    """Find, repair or create PVCDATA on the node's data disk, mount it at `mount_root` and bind its folders (`binds`,
    default BINDS) where the services expect them. Raises DataError (nothing was written) or DataHalt (the node must
    stop)."""
    disk = choose_disk(node, found)
    if boot_disks is None:
        try:
            boot_disks = probe.boot_medium_disks()
        except OSError as exc:
            raise DataError(f"cannot tell which disk holds the boot medium ({exc}); nothing was written") from None
    chosen = probe.probe(disk, run_probe, boot_disks)
    others = [probe.probe(d, run_probe, boot_disks) for d in found if d != disk]
    plan = decide(node, chosen, others)
    if plan.action == "create":
        if plan.wipe:
            confirm_wipe(node, plan, run_probe, boot_disks, log)
        part = create(disk, log, wiped=plan.wipe)
    else:
        assert plan.part is not None
        part = Path(plan.part.dev)
        if plan.action == "format":
            log(f"data: finishing {LABEL} on {part}: partitioned by an interrupted first boot")
            run("mkfs.ext4", "-q", "-F", "-L", LABEL, str(part))
        elif mounted_from(mount_root, part):
            log(f"data: reusing {LABEL} on {part} ({disk.dev}), mounted already")
        else:
            check(part, log, damaged=plan.action == "repair", run_probe=run_probe)
            if plan.action == "mount":
                log(f"data: reusing {LABEL} on {part} ({disk.dev})")
        if plan.part.partname == NEW_LABEL:
            part = name(disk, plan.part.number, LABEL)
    fresh = Identity(
        cluster=cluster,
        node=node.name,
        serial=disk.serial,
        model=disk.model,
        size=disk.size,
        created=time.time() if plan.action in ("create", "format") else None,
        wiped=plan.wipe,
    )
    identity = mount(part, mount_root, fresh, BINDS if binds is None else binds)
    return Outcome(plan.action, part, identity)


def confirm_wipe(
    node: Node, plan: Plan, run_probe: Runner, boot_disks: frozenset[str], log: Callable[[str], object]
) -> None:
    """Before allow_wipe destroys anything: let udev settle, probe twice more, and wipe only if both probes see the
    same disk as the decision did; say on the console what is being wiped."""
    with contextlib.suppress(OSError, subprocess.TimeoutExpired):  # no udev (a container): nothing to wait for
        subprocess.run(["udevadm", "settle", "--timeout=30"], capture_output=True, timeout=60)
    for _ in range(2):
        again = probe.probe(plan.facts.disk, run_probe, boot_disks)
        if again != plan.facts:
            raise DataError(
                f"disk {plan.facts.describe()} changed between two probes ({again.signatures or again.errors}); "
                "not wiping it"
            )
        time.sleep(0.5)
    log(f"data: allow_wipe: wiping disk {plan.facts.describe()} of node '{node.name}' (found: {', '.join(plan.wipe)})")


def create(disk: disks.Disk, log: Callable[[str], object], wiped: tuple[str, ...] = ()) -> Path:
    """A GPT with one partition, named PVCDATA-NEW until its ext4 exists, then PVCDATA."""
    log(f"data: creating {LABEL} on {disk.dev} ({disk.size // 1024**2} MiB)" + (" after wiping" if wiped else ""))
    run("wipefs", "--all", disk.dev)
    run("sgdisk", "--clear", "--new=1:0:0", f"--change-name=1:{NEW_LABEL}", "--typecode=1:8300", disk.dev)
    part = _partition(disk)
    if part is None:
        raise DataError(f"the kernel shows no partition 1 on {disk.dev} after partitioning it")
    run("mkfs.ext4", "-q", "-F", "-L", LABEL, str(part))
    return name(disk, 1, LABEL)


def name(disk: disks.Disk, number: int, partname: str) -> Path:
    """Set partition `number`'s GPT name; returns its device node as the kernel knows it afterwards (sgdisk makes the
    kernel re-read the table when the disk is not in use, which may give a loop device's partition a new minor)."""
    run("sgdisk", f"--change-name={number}:{partname}", disk.dev)
    part = _partition(disk, number)
    if part is None:
        raise DataError(f"the kernel shows no partition {number} on {disk.dev} after naming it {partname}")
    return part


def _partition(disk: disks.Disk, number: int = 1) -> Path | None:
    """Partition `number` of a freshly (re)partitioned disk, once the kernel knows it (udev is not relied on: a
    container has none, and sgdisk's own re-read can lose a race)."""
    subprocess.run(["partx", "--add", disk.dev], capture_output=True, timeout=60)
    for _ in range(50):
        node = disks.partition_node(disk, number)
        if node is not None:
            return node
        time.sleep(0.1)
    return None


def check(part: Path, log: Callable[[str], object], damaged: bool, run_probe: Runner = system_run) -> None:
    """`e2fsck -p` before mounting; when the primary superblock cannot be read (`damaged`), from a backup superblock,
    after which blkid must see PVCDATA's ext4 again. DataHalt when preen mode cannot repair it: PVC never runs mkfs
    over PVCDATA, nor e2fsck -y (which may throw data away to make a filesystem consistent)."""
    tried = []
    attempts: list[list[str]] = [[]]
    if damaged:
        log(f"data: {LABEL} on {part} has no readable filesystem: repairing it from a backup superblock")
        attempts = [["-b", str(sb), "-B", str(bs)] for bs, sbs in BACKUP_SUPERBLOCKS for sb in sbs]
    for extra in attempts:
        argv = ["e2fsck", "-p", *extra, str(part)]
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
        except subprocess.TimeoutExpired:
            tried.append(f"{' '.join(argv)} did not finish in an hour")
            break
        said = (out.stdout + out.stderr).strip()
        if out.returncode & ~FSCK_CORRECTED == 0:
            readable = _readable(part, run_probe)
            if readable:
                if damaged or out.returncode:
                    last = said.splitlines()[-1] if said else ""
                    log(f"data: {' '.join(argv[:-1])} repaired {LABEL} on {part}: {last}")
                return
            tried.append(f"{' '.join(argv)} exit {out.returncode}, but blkid still finds no ext4 on {part}")
            continue
        if out.returncode != 8 or not damaged:  # 8: could not open with that superblock; try the next one
            tried.append(f"{' '.join(argv)} exit {out.returncode}: {said[-300:]}")
            break
        tried.append(f"{' '.join(argv)}: exit 8")
    raise DataHalt(
        f"{LABEL} on {part} is damaged and e2fsck in preen mode could not repair it ({'; '.join(tried)}). "
        f"Nothing was reformatted; this node stops here. Repair it by hand (e2fsck -b 32768 {part}) and run "
        "`systemctl restart pvc-node`"
    )


def _readable(part: Path, run_probe: Runner) -> bool:
    try:
        return probe.superblock(str(part), run_probe).get("TYPE") == "ext4"
    except ProbeError:
        return False


def mounted_from(mount_root: Path, part: Path) -> bool:
    """Whether `mount_root` is already a mount of `part` (pvc-node restarted after a later step failed)."""
    try:
        want = os.stat(part).st_rdev
    except OSError:
        return False
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        fields = line.split()
        if fields[4] == str(mount_root):
            major, minor = (int(x) for x in fields[2].split(":"))
            return os.makedev(major, minor) == want
    return False


def mount(part: Path, root: Path, fresh: Identity, binds: dict[str, str]) -> Identity:
    """Mount PVCDATA at `root`, check its MARKER (another cluster's PVCDATA is refused, and unmounted again), then
    bind its folders over the services' /var/lib folders. Returns the PVCDATA's identity."""
    root.mkdir(parents=True, exist_ok=True)
    if not is_mounted(root):
        run("mount", "-o", "noatime", str(part), str(root))
    marker = root / MARKER
    identity = Identity.read(marker)
    if identity is not None and (identity.cluster, identity.node) != (fresh.cluster, fresh.node):
        subprocess.run(["umount", str(root)], capture_output=True, timeout=120)
        whose = f"node '{identity.node}'" + (" of this cluster" if identity.cluster == fresh.cluster else "")
        raise DataError(
            f"{LABEL} on {part} belongs to {whose} (cluster fsid {identity.cluster}), not to node '{fresh.node}' "
            f"(fsid {fresh.cluster}); nothing was written. Give this node its own data disk"
        )
    if identity is None or identity.serial != fresh.serial:
        kept = {"created": identity.created, "wiped": identity.wiped} if identity else {}
        identity = Identity(**{**asdict(fresh), **kept})
        identity.write(marker)
    for sub, target in binds.items():
        src = root / sub
        src.mkdir(exist_ok=True)
        Path(target).mkdir(parents=True, exist_ok=True)
        if not is_mounted(Path(target)):
            run("mount", "--bind", str(src), target)
    pg = root / "postgresql"
    try:
        pw = pwd.getpwnam("postgres")
        os.chown(pg, pw.pw_uid, pw.pw_gid)
    except (KeyError, OSError):
        pass
    return identity


__all__ = ["DataError", "DataHalt", "Identity", "Outcome", "ProbeError", "decide", "prepare"]
