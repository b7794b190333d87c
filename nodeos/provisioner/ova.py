"""OVA import: an uploaded OVA becomes RBD volumes (one per disk, with a protected snapshot), a system template, a
network template and a profile of kind 'ova', all named after it; `pvc vm create --profile` clones its disks.

The upload is spooled, like a qcow2 or VMDK image upload, into an unnamed file on PVCDATA (never held in memory,
gone on any exit). An OVA is a tar archive, which stores each member contiguously: each disk is inspected and
converted by qemu-img (sandboxed, pvc.nodeos.storage.qemuimg) reading the member in place through qemu's raw driver
with an offset and a size, and writing straight into RBD through librbd. So the disks are never unpacked (no second
copy on disk) and no kernel RBD device is mapped. Everything is checked before anything is made: the archive, the
descriptor (pvc.nodeos.provisioner.ovf), each disk the descriptor names (present, of an allowed format,
self-contained: the same checks as an image upload), its networks, the names, the pool's room. A failure after
that removes every volume made, and the database rows go in one transaction at the end, so a refused or failed
import leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import rados
from pydantic import ValidationError

from pvc.config.names import check_name
from pvc.nodeos.provisioner import ovf, store
from pvc.nodeos.provisioner.db import Cursor, Database
from pvc.nodeos.provisioner.errors import Exists, InUse, Invalid
from pvc.nodeos.provisioner.models import (
    ImageView,
    NetworkTemplate,
    OvaView,
    Profile,
    StorageTemplate,
    SystemTemplate,
    TemplateDisk,
)
from pvc.nodeos.state.vmdef import MAX_DISKS
from pvc.nodeos.storage import ceph, qemuimg, volumes
from pvc.nodeos.storage.pools import check_room, get_pool
from pvc.nodeos.storage.upload import Body, CephUser, convert_into, inspected, limit, spool_limit, spooled

SNAPSHOT = "ova"
MAX_MEMBERS = 256


@dataclass(frozen=True)
class Request:
    name: str
    pool: str
    description: str
    networks: dict[str, int]  # an OVF network name → the VNI of the PVC network its NICs go on (given at upload)


@dataclass(frozen=True)
class Archive:
    ovf_name: str
    ovf_text: str
    members: dict[str, qemuimg.Member]


@dataclass(frozen=True)
class NewDisk:
    disk: ovf.OvfDisk
    member: qemuimg.Member
    id: str  # sda, sdb, ...
    volume: str


def description(name: str) -> str:
    """The description of the templates and profile an upload makes: how `remove` knows they are its own."""
    return f"from OVA {name}"


def volume_name(ova: str, disk_id: str) -> str:
    return f"ova_{ova}_{disk_id}"


def disk_ids(count: int) -> list[str]:
    return [f"sd{chr(ord('a') + i)}" for i in range(count)]


# -- checks before the body is read -------------------------------------------------------------------------------
def check_free(db: Database, name: str) -> None:
    """Exists (409) when the OVA, or the system template, network template or profile it would make, is taken;
    Invalid when its volumes could not be named. Said before a byte of the upload is read."""
    try:
        check_name(volume_name(name, "sda"), "OVA's volume name")
    except ValueError as exc:
        raise Invalid(f"{exc}: choose a shorter OVA name", "ova") from None

    def look(cur: Cursor) -> None:
        for table in ("ova", "system_template", "network_template", "profile"):
            if store.taken(cur, table, name):
                raise Exists(f"{store.WHAT[table]} '{name}' already exists (an OVA upload makes one named so)", "ova")

    db.transaction(look, write=False)


# -- reading the archive (no side effects) ------------------------------------------------------------------------
def read_archive(f: BinaryIO) -> Archive:
    """The members of the OVA in `f` and its descriptor; Invalid saying what is wrong with the archive."""
    members: dict[str, qemuimg.Member] = {}
    descriptors: list[tuple[str, tarfile.TarInfo]] = []
    f.seek(0)
    try:
        with tarfile.open(fileobj=f, mode="r:") as tar:
            for info in tar:
                if len(members) >= MAX_MEMBERS:
                    raise Invalid(f"the OVA has more than {MAX_MEMBERS} members", "body")
                if not info.isfile() or info.issparse():
                    continue
                name = info.name.removeprefix("./")  # as `tar -cf x.ova ./*` stores them
                if name in members:
                    raise Invalid(f"the OVA holds '{name}' twice", "body")
                members[name] = qemuimg.Member(info.offset_data, info.size)
                if name.lower().endswith(".ovf"):
                    descriptors.append((name, info))
    except (tarfile.TarError, ValueError, EOFError, OverflowError) as exc:  # tarfile raises these on bad headers too
        raise Invalid(f"the OVA is not a tar archive ({exc})", "body") from None
    if len(descriptors) != 1:
        found = ", ".join(n for n, _ in descriptors)
        raise Invalid(
            f"the OVA holds {len(descriptors)} .ovf descriptors{f' ({found})' if found else ''}; one is needed", "body"
        )
    name, info = descriptors[0]
    if info.size > ovf.MAX_OVF_BYTES:
        raise Invalid(f"{name}: the descriptor is {info.size} bytes; at most {ovf.MAX_OVF_BYTES} are accepted", "body")
    f.seek(info.offset_data)
    raw = f.read(info.size)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Invalid(f"{name}: not UTF-8 text (byte {exc.start})", "body") from None
    return Archive(name, text, members)


def descriptor(archive: Archive) -> ovf.Ovf:
    try:
        return ovf.parse(archive.ovf_text)
    except ovf.OvfError as exc:
        raise Invalid(f"{archive.ovf_name}: {exc}", "body") from None


# -- planning (pure) ----------------------------------------------------------------------------------------------
def plan_disks(archive: Archive, parsed: ovf.Ovf, name: str) -> list[NewDisk]:
    """Each disk the descriptor attaches, found in the archive; Invalid naming a missing one."""
    if not parsed.disks:
        raise Invalid(f"{archive.ovf_name}: the virtual system has no disk", "body")
    if len(parsed.disks) > MAX_DISKS:
        raise Invalid(
            f"{archive.ovf_name}: the virtual system has {len(parsed.disks)} disks; a VM has at most {MAX_DISKS}",
            "body",
        )
    out = []
    for d, disk_id in zip(parsed.disks, disk_ids(len(parsed.disks)), strict=True):
        member = archive.members.get(d.href)
        if member is None:
            raise Invalid(f"{archive.ovf_name}: disk {d.disk_id}: file '{d.href}' is not in the OVA", "body")
        out.append(NewDisk(d, member, disk_id, volume_name(name, disk_id)))
    return out


def nic_networks(parsed: ovf.Ovf, mapping: dict[str, int], known: dict[str, int]) -> list[int]:
    """The VNI of each NIC's network: the mapping given, else the PVC network of that name; Invalid naming a NIC
    whose network maps to none."""
    vnis = set(known.values())
    for network, vni in mapping.items():
        if vni not in vnis:
            raise Invalid(f"networks: '{network}' maps to VNI {vni}, which is no PVC network", "networks")
    out = []
    for i, nic in enumerate(parsed.nics):
        found = mapping.get(nic.network) or known.get(nic.network)
        if found is None:
            raise Invalid(
                f"NIC {i} is on the OVF's network '{nic.network}', which is no PVC network: map it with "
                f"networks='{nic.network}=VNI' (`pvc provisioner ova upload --network '{nic.network}=VNI'`)",
                "networks",
            )
        out.append(found)
    return out


def templates(request: Request, parsed: ovf.Ovf, vnis: list[int]) -> tuple[SystemTemplate, NetworkTemplate | None]:
    """The system template (and, with NICs, the network template) the OVA's virtual system makes; Invalid when
    one of its values is out of PVC's bounds."""
    name, marker = request.name, description(request.name)
    try:
        system = SystemTemplate(
            name=name,
            description=marker,
            vcpus=parsed.vcpus,
            memory_mib=parsed.memory_mib,
            firmware="uefi" if parsed.firmware == "uefi" else "bios",
        )
        nics = [{"network": vni, "model": nic.model} for vni, nic in zip(vnis, parsed.nics, strict=True)]
        network = NetworkTemplate.model_validate({"name": name, "description": marker, "nics": nics}) if nics else None
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise Invalid(f"the OVF's {where}: {error['msg']}", "body") from None
    return system, network


# -- the import ---------------------------------------------------------------------------------------------------
def upload(
    db: Database,
    cluster: rados.Rados,
    user: CephUser,
    request: Request,
    stream: Body,
    length: int | None,
    known_networks: dict[str, int],
    spool: Path,
    upload_max: int | None,
) -> OvaView:
    """Import the OVA read from `stream` (`length` bytes, or up to its end) as `request` says."""
    record = get_pool(cluster, request.pool)
    check_room(record, False, f"import OVA {request.name}")
    volume_limit = limit(record, False, upload_max)
    with spooled(stream, length, spool, spool_limit(record, False, upload_max, spool)) as f:
        archive = read_archive(f)
        parsed = descriptor(archive)
        disks = plan_disks(archive, parsed, request.name)
        system, network = templates(request, parsed, nic_networks(parsed, request.networks, known_networks))
        fd = f.fileno()
        sizes = []
        for d in disks:
            try:
                virtual = inspected(fd, d.disk.format, volume_limit, d.member)
            except ceph.Invalid as exc:
                raise Invalid(f"disk {d.disk.disk_id} ('{d.disk.href}'): {exc}", "body") from None
            sizes.append(max(virtual, d.disk.capacity))
        if sum(sizes) > volume_limit.bytes:
            raise Invalid(f"the disks are {sum(sizes)} bytes, over {volume_limit.bytes} ({volume_limit.why})", "body")
        for d in disks:
            with contextlib.suppress(ceph.Missing):
                volumes.get_volume(cluster, request.pool, d.volume)
                raise Exists(f"volume {request.pool}/{d.volume} already exists", "ova")
        made: list[str] = []
        try:
            rows = []
            for d, size in zip(disks, sizes, strict=True):
                convert_into(cluster, user, request.pool, d.volume, fd, d.disk.format, size, d.member)
                made.append(d.volume)
                volumes.create_snapshot(cluster, request.pool, d.volume, SNAPSHOT)
                volumes.protect_snapshot(cluster, request.pool, d.volume, SNAPSHOT)
                rows.append(
                    {"id": d.id, "pool": request.pool, "volume": d.volume, "format": d.disk.format, "size": size}
                )
            profile = Profile(
                name=request.name,
                description=description(request.name),
                kind="ova",
                system_template=request.name,
                network_template=request.name if network is not None else None,
                ova=request.name,
            )

            def record_it(cur: Cursor) -> dict[str, Any]:
                store.SYSTEM.add(cur, system)
                if network is not None:
                    store.NETWORK.add(cur, network)
                store.add_ova(cur, request.name, request.description, archive.ovf_text, rows)
                store.PROFILE.add(cur, profile)
                return store.get_ova(cur, request.name)

            return view(db.transaction(record_it))
        except BaseException:
            for volume in reversed(made):
                with contextlib.suppress(Exception):
                    volumes.remove_volume(cluster, request.pool, volume)
            raise


def view(row: dict[str, Any]) -> OvaView:
    """An OVA as the API shows it: its row, with what the stored descriptor says (vCPUs, memory, buses, NICs)."""
    parsed = ovf.parse(row["ovf"])
    disks = [{**d, "bus": o.bus} for d, o in zip(row["disks"], parsed.disks, strict=False)]
    return OvaView.model_validate(
        {
            **{k: row[k] for k in ("name", "description", "created", "profiles")},
            "vcpus": parsed.vcpus,
            "memory_mib": parsed.memory_mib,
            "firmware": parsed.firmware,
            "disks": disks,
            "nics": [{"network": n.network, "model": n.model} for n in parsed.nics],
        }
    )


def clones(cluster: rados.Rados, ova: OvaView) -> list[str]:
    """The volumes cloned from the OVA's disks."""
    found: list[str] = []
    for d in ova.disks:
        with contextlib.suppress(ceph.Missing):
            found += volumes.snapshot_clones(cluster, d.pool, d.volume, SNAPSHOT)
    return found


# -- VM disks (pvc vm create --profile, kind ova) -----------------------------------------------------------------
def storage(cur: Cursor, name: str) -> tuple[StorageTemplate, dict[str, ImageView]]:
    """The OVA's disks as a storage template whose disks clone them, and the images (its volumes and their
    protected snapshots) they clone: what `pvc vm create` makes a profile's disks from."""
    ova = view(store.get_ova(cur, name))
    disks = [
        TemplateDisk.model_validate({"id": d.id, "pool": d.pool, "image": d.volume, "bus": d.bus}) for d in ova.disks
    ]
    images = {
        d.volume: ImageView(
            name=d.volume,
            description=f"disk {d.id} of OVA {name}",
            pool=d.pool,
            volume=d.volume,
            snapshot=SNAPSHOT,
            format=d.format,
            size=d.size,
            created=ova.created,
        )
        for d in ova.disks
    }
    return StorageTemplate(name=name, disks=disks), images


# -- removal ------------------------------------------------------------------------------------------------------
def remove(db: Database, cluster: rados.Rados, name: str) -> list[str]:
    """Remove OVA `name`: its profile, templates (the ones its upload made, when nothing else uses them) and record
    in one transaction, then its volumes. InUse naming the other profiles that use it, or the VM disks cloned from
    it. What was removed; a volume Ceph keeps (held open) is a StorageError naming it, after the rest are gone."""

    def forget(cur: Cursor) -> tuple[list[str], list[tuple[str, str]]]:
        ova = view(store.get_ova(cur, name))
        others = [p for p in ova.profiles if p != name]
        cloned = clones(cluster, ova)
        users = [f"profile {p}" for p in others]
        if cloned:
            users.append(f"the VM disks cloned from it ({', '.join(cloned)})")
        if users:
            raise InUse(f"OVA '{name}' is in use by {'; '.join(users)}: remove them first")
        removed = []
        if name in ova.profiles:
            store.PROFILE.remove(cur, name)
            removed.append(f"profile {name}")
        store.remove_ova(cur, name)
        removed.append(f"OVA {name}")
        for table in (store.SYSTEM, store.NETWORK):
            if not store.taken(cur, table.table, name):
                continue
            if table.get(cur, name).description == description(name) and not table.get(cur, name).profiles:
                table.remove(cur, name)
                removed.append(f"{store.WHAT[table.table]} {name}")
        return removed, [(d.pool, d.volume) for d in ova.disks]

    # the volumes only once the records are gone: a volume Ceph refuses never leaves a record without its disks
    removed, disks = db.transaction(forget)
    kept = []
    for pool, volume in disks:
        try:
            volumes.remove_volume(cluster, pool, volume)
        except ceph.Missing:
            continue
        except (ceph.StorageError, rados.Error) as exc:
            kept.append(f"{pool}/{volume} ({exc})")
            continue
        removed.append(f"volume {pool}/{volume}")
    if kept:
        raise ceph.StorageError(
            f"OVA '{name}' is removed, but Ceph kept {', '.join(kept)}: remove it with `pvc storage volume remove`"
        )
    return removed
