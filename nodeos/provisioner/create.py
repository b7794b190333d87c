"""`pvc vm create`: a VM from a profile (or from an image, without templates), in three parts.

- `load` reads what the request names from the database (profile, templates, userdata, images); `plan` (pure)
  turns it into the volumes to make and the typed VM definition (`VmDefinition`), with the `--arg` values put into
  the user-data; `check` validates the plan against the cluster before anything is made: a unique name, a node
  with room for the memory, networks that exist, pools under the 80 % guard, volumes not taken.
- `run` makes it, step by step, reporting to a task: each disk cloned from its image's protected snapshot
  (copy-on-write) or made empty, grown to its size; the VM defined through `actions.define_vm` (stopped); the
  cloud-init seed (pvc.nodeos.provisioner.seed) written into a small volume the VM has as a read-only virtio disk; the VM
  started if asked. On any failure everything made is removed, and the task says which step failed and why.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field
from typing import Annotated, Any

import rados
from pydantic import Field, ValidationError, model_validator

from pvc.config.names import Name
from pvc.config.types import Size
from pvc.nodeos.provisioner import ova, seed, store
from pvc.nodeos.provisioner.db import Cursor, Database
from pvc.nodeos.provisioner.errors import Exists, Invalid
from pvc.nodeos.provisioner.models import (
    Arguments,
    ImageView,
    Input,
    NetworkTemplate,
    ProfileView,
    StorageTemplate,
    SystemTemplate,
    TemplateDisk,
    Vni,
    vm_fields,
)
from pvc.nodeos.state import actions, placement
from pvc.nodeos.state.models import Task, VmSeed, VmSpec
from pvc.nodeos.state.store import ClusterState, NotFound
from pvc.nodeos.state.vmdef import (
    MAX_DISK_BYTES,
    MAX_MEMORY_MIB,
    MAX_NICS,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    Disk,
    Nic,
    VmDefinition,
)
from pvc.nodeos.storage import pools, volumes
from pvc.nodeos.storage.ceph import Connection, Missing

SEED_ID = "cidata"  # the seed volume is <vm>_cidata
MAX_SSH_KEYS = 16
SshKey = Annotated[str, Field(min_length=1, max_length=16 * 1024, pattern=r"^[^\r\n]+\n?$")]


class CreateRequest(Input):
    """What `pvc vm create` sends: a profile, or (without templates) an image with the VM's size."""

    name: Name
    profile: Annotated[Name | None, Field(description="make the VM from this profile")] = None
    node: Annotated[Name | None, Field(description="its home node; default: the one the selector picks")] = None
    start: Annotated[bool, Field(description="start it once it is made")] = False
    arguments: Annotated[
        Arguments, Field(default_factory=dict, description="values for the user-data's {{ name }} placeholders")
    ]
    image: Annotated[Name | None, Field(description="without a profile: clone this image as the one disk")] = None
    memory_mib: Annotated[int | None, Field(ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB)] = None
    vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] = 1
    disk_size: Annotated[
        Size | None, Field(ge=1, le=MAX_DISK_BYTES, description="bytes or like '20G'; default: the image's size")
    ] = None
    pool: Annotated[Name | None, Field(description="the disk's pool; default: the image's")] = None
    networks: Annotated[
        list[Vni], Field(default_factory=list, max_length=MAX_NICS, description="a NIC on each, in order")
    ]
    ssh_keys: Annotated[
        list[SshKey], Field(default_factory=list, max_length=MAX_SSH_KEYS, description="added to the user-data")
    ]
    userdata: Annotated[str | None, Field(max_length=256 * 1024, description="a user-data document")] = None
    seed_volume: Annotated[
        bool,
        Field(
            description="give the VM its cloud-init seed as a volume (a read-only disk); false: no volume, cloud-init reads "
            "the same documents from the metadata service at 169.254.169.254 (a NIC on a managed network needed)"
        ),
    ] = True

    @model_validator(mode="after")
    def _one_way(self) -> CreateRequest:
        if (self.profile is None) == (self.image is None):
            raise ValueError("give a profile, or an image (with memory_mib) to create without templates")
        quick = ("memory_mib", "vcpus", "disk_size", "pool", "networks", "ssh_keys", "userdata")
        if self.profile is not None:
            given = [f for f in quick if f in self.model_fields_set]
            if given:
                raise ValueError(f"{given[0]} is for a create without a profile (the profile's templates say it)")
        elif self.memory_mib is None:
            raise ValueError("memory_mib: give the VM's memory when creating from an image")
        return self


@dataclass(frozen=True)
class Sources:
    """What a request names, read from the database in one transaction."""

    profile: ProfileView | None
    system: SystemTemplate | None
    network: NetworkTemplate | None
    storage: StorageTemplate | None
    userdata: str | None
    images: dict[str, ImageView]


@dataclass(frozen=True)
class NewDisk:
    id: str
    pool: str
    name: str  # the volume: <vm>_<id>
    size: int
    image: ImageView | None  # cloned from its snapshot; None: an empty volume

    @property
    def volume(self) -> str:
        return f"{self.pool}/{self.name}"


@dataclass(frozen=True)
class Plan:
    definition: VmDefinition
    disks: list[NewDisk]
    seed_pool: str
    seed_name: str
    with_seed_volume: bool
    user_data: str
    meta_extra: dict[str, Any]
    node: str | None
    start: bool
    source: str  # "profile web" / "image debian": what the task's messages say it was made from
    profile: str | None
    arguments: dict[str, str]  # the --arg values and the profile's defaults (vm_name aside)

    @property
    def seed_volume(self) -> str:
        return f"{self.seed_pool}/{self.seed_name}"

    @property
    def steps(self) -> int:
        return len(self.disks) + 2 + int(self.start)


# -- reading -------------------------------------------------------------------------------------------------------
def load(db: Database, request: CreateRequest) -> Sources:
    """Missing (404) for an unknown profile; Invalid (400, field image) for an image no one uploaded."""

    def read(cur: Cursor) -> Sources:
        if request.profile is None:
            return Sources(None, None, None, None, request.userdata, {request.image or "": _image(cur, request.image)})
        profile: ProfileView = store.PROFILE.get(cur, request.profile)
        system = store.SYSTEM.get(cur, profile.system_template)
        network = store.NETWORK.get(cur, profile.network_template) if profile.network_template else None
        body = store.USERDATA.get(cur, profile.userdata).body if profile.userdata else None
        if profile.kind == "ova" and profile.ova is not None:  # disks cloned from the OVA's
            disks, images = ova.storage(cur, profile.ova)
            return Sources(profile, system, network, disks, body, images)
        storage = store.STORAGE.get(cur, profile.storage_template) if profile.storage_template else None
        names = sorted({d.image for d in storage.disks if d.image} if storage else set())
        return Sources(profile, system, network, storage, body, {n: _image(cur, n) for n in names})

    return db.transaction(read, write=False)


def _image(cur: Cursor, name: str | None) -> ImageView:
    if name is None or not store.image_exists(cur, name):
        raise Invalid(f"there is no image '{name}' (upload it with `pvc image upload`)", "image")
    return store.get_image(cur, name)


# -- planning (pure) -----------------------------------------------------------------------------------------------
def plan(request: CreateRequest, src: Sources) -> Plan:
    """The volumes and the VM definition `request` makes from `src`; Invalid naming the field otherwise."""
    name = request.name
    if src.profile is not None:
        assert src.system is not None
        fields = vm_fields(src.system)
        disks = [_disk(name, d, src.images) for d in (src.storage.disks if src.storage else [])]
        buses = [d.bus for d in src.storage.disks] if src.storage else []
        nics = [{"network": n.network, "model": n.model} for n in (src.network.nics if src.network else [])]
        values = {**src.profile.arguments, **request.arguments}
        meta_extra = dict(src.profile.metadata)
        source = f"profile {src.profile.name}"
    else:
        image = next(iter(src.images.values()))
        fields = {"vcpus": request.vcpus, "memory_mib": request.memory_mib}
        template = TemplateDisk(id="sda", pool=request.pool or image.pool, size=request.disk_size, image=image.name)
        disks, buses = [_disk(name, template, src.images)], ["virtio"]
        nics = [{"network": vni, "model": "virtio"} for vni in request.networks]
        values, meta_extra, source = dict(request.arguments), {}, f"image {image.name}"
    if not disks:
        raise Invalid(f"{source} makes no disks: its storage template needs at least one", "storage_template")
    arguments = dict(values)
    values.update(vm_name=name)
    user_data = _user_data(request, src.userdata, values)
    seed_pool, seed_name = disks[0].pool, f"{name}_{SEED_ID}"
    attached = [{"volume": d.volume, "bus": bus, "size": d.size} for d, bus in zip(disks, buses, strict=True)]
    if request.seed_volume:
        # A read-only virtio disk, not a cdrom: cloud-init's ds-identify looks for the `cidata` label while the root
        # is barely mounted, when only the initramfs's drivers are loaded. virtio-blk is always there (it reads the
        # root); a SATA cdrom needs AHCI, which Debian's cloud kernel lacks, and a SCSI one appears too late.
        attached.append({"volume": f"{seed_pool}/{seed_name}", "device": "disk", "bus": "virtio", "read_only": True})
    try:
        definition = VmDefinition.model_validate(
            {
                **fields,
                "name": name,
                "disks": [Disk.model_validate(d) for d in attached],
                "nics": [Nic.model_validate(n) for n in nics],
            }
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(p) for p in error["loc"])
        raise Invalid(f"the VM it makes is not valid: {where}: {error['msg']}", "name") from None
    return Plan(
        definition,
        disks,
        seed_pool,
        seed_name,
        request.seed_volume,
        user_data,
        meta_extra,
        request.node,
        request.start,
        source,
        request.profile,
        arguments,
    )


def _disk(vm: str, d: TemplateDisk, images: dict[str, ImageView]) -> NewDisk:
    image = images[d.image] if d.image else None
    size = d.size or (image.size if image else 0)
    if image is not None and size < image.size:
        raise Invalid(f"disk {d.id}: {size} bytes is smaller than image {image.name} ({image.size} bytes)", "disk_size")
    return NewDisk(d.id, d.pool, f"{vm}_{d.id}", size, image)


def _user_data(request: CreateRequest, body: str | None, values: dict[str, str]) -> str:
    try:
        text = seed.substitute(body, values) if body is not None else None
        if text is None or request.ssh_keys:
            text = seed.with_ssh_keys(text, request.ssh_keys)
    except (seed.SeedError, ValueError) as exc:
        raise Invalid(str(exc), "userdata" if request.profile is None else "arguments") from None
    return text


# -- checking against the cluster -----------------------------------------------------------------------------------
def check(state: ClusterState, ceph: Connection, p: Plan, default_selector: str) -> str:
    """Everything a create needs, before anything is made; returns the node it goes to. Exists (409) for a taken
    name or volume, NoTarget (409) when no node has room, Invalid (400) for a missing network or pool, Refused
    (409) for a pool over the 80 % guard."""
    name = p.definition.name
    with contextlib.suppress(NotFound):
        state.find_vm(name)
        raise Exists(f"a VM named '{name}' already exists", "name")
    served = False  # by the metadata service: a managed network with an IPv4 gateway
    for nic in p.definition.nics:
        try:
            net = state.network(nic.network)
        except NotFound:
            raise Invalid(f"there is no network {nic.network} (`pvc network list`)", "network") from None
        served = served or (net.type == "managed" and net.gateway is not None)
    if not p.with_seed_volume and not served:
        raise Invalid(
            "without a seed volume, cloud-init reads the metadata service, which only managed networks with an "
            "IPv4 gateway serve: give the VM a NIC on one, or keep the seed volume",
            "seed_volume",
        )
    probe_uuid = "00000000-0000-0000-0000-000000000000"  # placement reads the memory and the node limit only
    probe = VmSpec(uuid=probe_uuid, name=name, definition=p.definition.changed(uuid=probe_uuid), node="")
    candidates = placement.candidates(state)
    if p.node is not None:
        placement.check_target(probe, candidates, p.node)
        node = p.node
    else:
        node = placement.choose(probe, candidates, default_selector, exclude=set())
    ceph.run(lambda c: _check_storage(c, p))
    return node


def _check_storage(cluster: rados.Rados, p: Plan) -> None:
    for pool in sorted({d.pool for d in p.disks}):
        if not cluster.pool_exists(pool):
            raise Invalid(f"there is no pool '{pool}'", "pool")
        pools.check_room(pools.get_pool(cluster, pool), False, f"create the disks of VM {p.definition.name}")
    for volume in [*(d.volume for d in p.disks), *([p.seed_volume] if p.with_seed_volume else [])]:
        pool, _, image = volume.partition("/")
        with contextlib.suppress(Missing):
            volumes.get_volume(cluster, pool, image)
            raise Exists(f"volume {volume} already exists", "name")


# -- making it -------------------------------------------------------------------------------------------------------
@dataclass
class Made:
    """What a create has made so far, for undoing it."""

    volumes: list[tuple[str, str]] = field(default_factory=list)
    vm: str | None = None  # the UUID


def run(
    state: ClusterState,
    ceph: Connection,
    db: Database,
    p: Plan,
    task: Task,
    node: str,
    mac_prefix: str,
    default_selector: str,
) -> Task:
    """Make the VM of plan `p`, reporting each step to `task`; on a failure, undo and fail the task."""
    made = Made()
    step = "start"
    done = 0

    def begin(what: str) -> None:
        nonlocal step
        step = what
        state.update_task(task.id, state="running", progress=done, message=what)

    try:
        for d in p.disks:
            if d.image is not None:
                begin(f"clone disk {d.id} from image {d.image.name}")
                _clone(ceph, d, made)
            else:
                begin(f"create disk {d.id} ({d.size} bytes)")
                ceph.run(functools.partial(volumes.create_volume, pool=d.pool, name=d.name, size=d.size))
                made.volumes.append((d.pool, d.name))
            done += 1
        begin(f"define VM {p.definition.name} on {node}")
        spec = actions.define_vm(
            state, p.definition, mac_prefix=mac_prefix, node=node, default_selector=default_selector
        )
        made.vm = spec.uuid
        done += 1
        begin("write the cloud-init seed")
        _write_seed(state, ceph, db, p, spec, made)
        done += 1
        if p.start:
            begin(f"start VM {p.definition.name}")
            actions.change_state(state, spec.uuid, "start")
            done += 1
    except Exception as exc:
        undone = undo(state, ceph, made)
        left = f"; removed {', '.join(undone)}" if undone else ""
        return state.finish_task(task.id, "failed", f"step '{step}' failed: {_reason(exc)}{left}")
    started = " and started it" if p.start else ""
    return state.finish_task(
        task.id, "succeeded", f"created VM {p.definition.name} ({spec.uuid}) on {node} from {p.source}{started}"
    )


def _clone(ceph: Connection, d: NewDisk, made: Made) -> None:
    image = d.image
    assert image is not None

    def clone(c: rados.Rados) -> None:
        volumes.clone_volume(c, image.pool, image.volume, image.snapshot, d.name, dest_pool=d.pool)
        made.volumes.append((d.pool, d.name))
        if d.size > image.size:
            volumes.resize_volume(c, d.pool, d.name, d.size)

    ceph.run(clone)


def _write_seed(state: ClusterState, ceph: Connection, db: Database, p: Plan, spec: VmSpec, made: Made) -> None:
    """The seed volume, the instance record of what went into it, and the same documents beside the VM in
    ZooKeeper for the primary's metadata service (removed with the VM). Without a seed volume, only the last two."""
    definition = spec.definition
    assert definition is not None
    meta = seed.meta(spec.uuid, definition.name, p.meta_extra)
    files = {
        "meta-data": seed.yaml_text(meta),
        "user-data": p.user_data,
        "network-config": seed.network_config([n.mac for n in definition.nics if n.mac]),
    }
    data = seed.iso(files)
    name, profile, args = definition.name, p.profile, p.arguments
    db.transaction(
        lambda cur: store.add_instance(cur, spec.uuid, name, profile, args, meta, p.user_data, files["network-config"])
    )
    state.put_vm_seed(
        spec.uuid,
        VmSeed(meta_data=meta, user_data=p.user_data, network_config=files["network-config"], profile=profile),
    )

    if not p.with_seed_volume:
        return

    def write(c: rados.Rados) -> None:
        volumes.create_volume(c, p.seed_pool, p.seed_name, seed.volume_size(data))
        made.volumes.append((p.seed_pool, p.seed_name))
        volumes.write_volume(c, p.seed_pool, p.seed_name, data)

    ceph.run(write)


def undo(state: ClusterState, ceph: Connection, made: Made) -> list[str]:
    """Remove what a failed create made, newest first; what was removed, as the task says it."""
    removed: list[str] = []
    if made.vm is not None:
        with contextlib.suppress(Exception):
            spec = state.find_vm(made.vm)
            if spec.state != "stop":
                actions.change_state(state, made.vm, "stop")
            state.remove_vm(made.vm)
            removed.append(f"VM {spec.name}")
    for pool, name in reversed(made.volumes):
        with contextlib.suppress(Exception):
            ceph.run(functools.partial(volumes.remove_volume, pool=pool, name=name))
            removed.append(f"volume {pool}/{name}")
    return removed


def _reason(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__
