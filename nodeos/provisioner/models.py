"""The provisioner's objects as the API takes and answers them: templates, userdata, profiles and images.

Inputs are strict (no coercion, unknown keys refused) and bounded like the VM definition's fields. A system
template's fields are VM definition fields with the same names and bounds; `vm_fields()` is the pure mapping the
create step starts from (template + arguments → definition). `change_model()` makes the PATCH body of a model:
every field optional, the result validated as a whole by the full model.
"""

from __future__ import annotations

import json
import re
from typing import Annotated, Any, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, create_model, field_validator, model_validator

from pvc.config.choices import Firmware, Graphics, Machine, NicModel, Selector, VmMigrationMethod
from pvc.config.names import Name
from pvc.config.networks import MAX_VNI
from pvc.config.types import Size
from pvc.nodeos.provisioner.userdata import classify
from pvc.nodeos.state.vmdef import (  # a template holds exactly what a definition can
    MAX_DISK_BYTES,
    MAX_DISKS,
    MAX_DOWNTIME_MS,
    MAX_MEMORY_MIB,
    MAX_NICS,
    MAX_NODE_LIMIT,
    MAX_VCPUS,
    MIN_MEMORY_MIB,
    CpuModel,
    DiskBus,
)

MAX_DESCRIPTION = 1024
MAX_USERDATA_BYTES = 256 * 1024
MAX_ARGUMENTS = 64
MAX_METADATA_BYTES = 64 * 1024
ProfileKind = Literal["image", "ova"]
UserdataKind = Literal["cloud-config", "multipart"]
RESERVED_METADATA = ("instance-id", "local-hostname", "hostname")  # PVC writes these from the VM
_ARG_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_DISK_ID_RE = re.compile(r"^[a-z][a-z0-9]{0,15}$")
_PLACEHOLDER_RE = re.compile(r"\{([^{}]*)\}")
MAC_PLACEHOLDERS = {"prefix": 3, "vmid": 2, "netid": 1}  # octets each stands for


def _disk_id(value: str) -> str:
    if not _DISK_ID_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not a disk id (like 'sda' or 'disk0': a lowercase letter, then up to 15 more)")
    return value


def _argument_name(value: str) -> str:
    if not _ARG_RE.fullmatch(value):
        raise ValueError(f"{value!r} is not an argument name (a letter or '_', then letters, digits or '_')")
    return value


def check_mac_template(template: str) -> str:
    """`template` when rendering it gives a MAC address: colon-separated octets, each two hex digits or one of
    `{prefix}` (the cluster's VM MAC prefix, three octets), `{vmid}` (the VM's number, two octets) and `{netid}`
    (the NIC's index, one octet); ValueError saying what is wrong otherwise. '{prefix}:{vmid}:{netid}' is the
    usual one."""
    octets = 0
    for part in template.split(":"):
        match = _PLACEHOLDER_RE.fullmatch(part)
        if match:
            if match.group(1) not in MAC_PLACEHOLDERS:
                raise ValueError(f"unknown placeholder {part} in {template!r} (use {{prefix}}, {{vmid}}, {{netid}})")
            octets += MAC_PLACEHOLDERS[match.group(1)]
        elif re.fullmatch(r"[0-9a-fA-F]{2}", part):
            octets += 1
        else:
            raise ValueError(f"{part!r} in {template!r} is neither two hex digits nor {{prefix}}, {{vmid}}, {{netid}}")
    if octets != 6:
        raise ValueError(f"{template!r} makes {octets} octets; a MAC address has 6")
    if "{netid}" not in template:
        raise ValueError(f"{template!r} has no {{netid}}: a VM's NICs would share one MAC")
    first = template.split(":")[0]
    if first != "{prefix}" and int(first, 16) & 1:
        raise ValueError(f"{template!r} starts with a multicast octet ({first}); a NIC needs a unicast MAC")
    return template


def render_mac(template: str, prefix: str, vmid: int, netid: int) -> str:
    """The MAC of NIC `netid` of VM number `vmid` from a checked template (the numbers taken modulo 65536 and
    256)."""
    values = {
        "prefix": prefix.lower(),
        "vmid": f"{(vmid >> 8) & 0xFF:02x}:{vmid & 0xFF:02x}",
        "netid": f"{netid & 0xFF:02x}",
    }
    return _PLACEHOLDER_RE.sub(lambda m: values[m.group(1)], template).lower()


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    reserved = [k for k in value if k in RESERVED_METADATA]
    if reserved:
        raise ValueError(f"'{reserved[0]}' is set by PVC from the VM; leave it out")
    if len(json.dumps(value)) > MAX_METADATA_BYTES:
        raise ValueError(f"the meta-data is over {MAX_METADATA_BYTES} bytes as JSON")
    return value


def _userdata(value: str) -> str:
    classify(value)
    return value


DiskId = Annotated[str, AfterValidator(_disk_id)]
Description = Annotated[str, Field(max_length=MAX_DESCRIPTION)]
Vni = Annotated[int, Field(ge=1, le=MAX_VNI, description="the network's VNI (a bridged network's VLAN id)")]
MacTemplate = Annotated[str, Field(max_length=64), AfterValidator(check_mac_template)]
Arguments = Annotated[
    dict[Annotated[str, AfterValidator(_argument_name)], Annotated[str, Field(max_length=4096)]],
    Field(max_length=MAX_ARGUMENTS),
]


class Input(BaseModel):
    """Strict: no type coercion, unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", strict=True)


class Topology(Input):
    """How the vCPUs appear to the guest; sockets × cores × threads must equal vcpus."""

    sockets: Annotated[int, Field(ge=1, le=MAX_VCPUS)] = 1
    cores: Annotated[int, Field(ge=1, le=MAX_VCPUS)] = 1
    threads: Annotated[int, Field(ge=1, le=8)] = 1


# -- system templates ---------------------------------------------------------------------------------------------
class SystemTemplate(Input):
    name: Name
    description: Description = ""
    vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)]
    topology: Topology | None = None
    memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB)]
    machine: Machine = "q35"
    firmware: Firmware = "bios"
    cpu_model: Annotated[CpuModel | None, Field(description="None: host-passthrough (KVM), QEMU's default (TCG)")] = (
        None
    )
    serial_console: bool = True
    graphics: Annotated[Graphics, Field(description="always listening on 127.0.0.1 only")] = "none"
    rng: bool = True
    guest_agent: bool = True
    node_limit: Annotated[list[Name], Field(max_length=MAX_NODE_LIMIT, description="[]: any node")] = []
    node_selector: Annotated[Selector | None, Field(description="None: the cluster's [migration] selector")] = None
    autostart: bool = False
    migration_method: Annotated[VmMigrationMethod | None, Field(description="None: the cluster's method")] = None
    migration_max_downtime_ms: Annotated[int | None, Field(ge=1, le=MAX_DOWNTIME_MS)] = None

    @model_validator(mode="after")
    def _shape(self) -> SystemTemplate:
        t = self.topology
        if t is not None and t.sockets * t.cores * t.threads != self.vcpus:
            raise ValueError(
                f"topology: {t.sockets} sockets × {t.cores} cores × {t.threads} threads = "
                f"{t.sockets * t.cores * t.threads}, but vcpus is {self.vcpus}"
            )
        if len(set(self.node_limit)) != len(self.node_limit):
            raise ValueError("node_limit names a node twice")
        return self


def vm_fields(t: SystemTemplate) -> dict[str, Any]:
    """The VM definition's fields a system template sets (pvc.nodeos.state.vmdef.VmDefinition: the create step adds
    name, disks and NICs). Pure."""
    return {
        "description": t.description,
        "vcpus": t.vcpus,
        "topology": t.topology.model_dump() if t.topology else None,
        "memory_mib": t.memory_mib,
        "machine": t.machine,
        "firmware": t.firmware,
        "cpu_model": t.cpu_model,
        "serial_console": t.serial_console,
        "graphics": t.graphics,
        "rng": t.rng,
        "guest_agent": t.guest_agent,
        "placement": {"node_limit": list(t.node_limit), "selector": t.node_selector, "autostart": t.autostart},
        "migration": {"method": t.migration_method, "max_downtime_ms": t.migration_max_downtime_ms},
    }


# -- network templates --------------------------------------------------------------------------------------------
class TemplateNic(Input):
    network: Vni
    model: NicModel = "virtio"


class NetworkTemplate(Input):
    name: Name
    description: Description = ""
    mac_template: Annotated[
        MacTemplate | None, Field(description="e.g. '{prefix}:{vmid}:{netid}'; None: PVC generates MACs")
    ] = None
    nics: Annotated[list[TemplateNic], Field(max_length=MAX_NICS, description="in order: eth0, eth1, ...")] = []


# -- storage templates --------------------------------------------------------------------------------------------
class TemplateDisk(Input):
    id: Annotated[DiskId, Field(description="the disk's volume is <vm>_<id>")]
    pool: Name
    size: Annotated[
        Size | None,
        Field(ge=1, le=MAX_DISK_BYTES, description="bytes (or like '20G'); with an image: grown to it if larger"),
    ] = None
    image: Annotated[Name | None, Field(description="clone this image (copy-on-write); None: an empty disk")] = None
    bus: DiskBus = "virtio"

    @model_validator(mode="after")
    def _sized(self) -> TemplateDisk:
        if self.size is None and self.image is None:
            raise ValueError(f"disk {self.id}: give a size, an image, or both")
        return self


class StorageTemplate(Input):
    name: Name
    description: Description = ""
    disks: Annotated[list[TemplateDisk], Field(max_length=MAX_DISKS, description="in order: the first boots")] = []

    @field_validator("disks")
    @classmethod
    def _unique(cls, disks: list[TemplateDisk]) -> list[TemplateDisk]:
        seen: set[str] = set()
        for d in disks:
            if d.id in seen:
                raise ValueError(f"disk {d.id} is given twice")
            seen.add(d.id)
        return disks


# -- userdata -----------------------------------------------------------------------------------------------------
class Userdata(Input):
    name: Name
    description: Description = ""
    body: Annotated[
        str,
        Field(min_length=1, max_length=MAX_USERDATA_BYTES, description="a #cloud-config document or MIME multipart"),
        AfterValidator(_userdata),
    ]


# -- profiles -----------------------------------------------------------------------------------------------------
class Profile(Input):
    name: Name
    description: Description = ""
    kind: ProfileKind = "image"
    system_template: Name
    network_template: Name | None = None
    storage_template: Name | None = None
    userdata: Name | None = None
    ova: Annotated[Name | None, Field(description="the OVA a profile of kind 'ova' makes its disks from")] = None
    arguments: Annotated[Arguments, Field(description="default values of `pvc vm create --arg key=value`")] = {}
    metadata: Annotated[
        dict[str, Any], AfterValidator(_metadata), Field(description="extra cloud-init meta-data keys")
    ] = {}

    @model_validator(mode="after")
    def _kind(self) -> Profile:
        if self.kind == "ova" and self.ova is None:
            raise ValueError("a profile of kind 'ova' names its OVA (ova)")
        if self.kind == "image" and self.ova is not None:
            raise ValueError("only a profile of kind 'ova' names an OVA")
        if self.kind == "ova" and self.storage_template is not None:
            raise ValueError("a profile of kind 'ova' takes its disks from the OVA, not a storage template")
        return self


# -- PATCH bodies -------------------------------------------------------------------------------------------------
M = TypeVar("M", bound=BaseModel)


def change_model(model: type[BaseModel]) -> type[BaseModel]:
    """`<Model>Change`: every field of `model` but the name, optional (an absent field keeps its value; null clears
    an optional one). Field-level bounds apply here; the whole is checked by `changed()`."""
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if name == "name":
            continue
        annotation: Any = Annotated[info.annotation, *info.metadata] if info.metadata else info.annotation
        fields[name] = (annotation | None, Field(None, description=info.description))
    return create_model(f"{model.__name__}Change", __config__=Input.model_config, **fields)


def changed(current: M, change: BaseModel) -> M:
    """`current` with the fields `change` sets, validated as a whole."""
    given = change.model_dump(exclude_unset=True)
    return type(current).model_validate({**current.model_dump(), **given})


SystemTemplateChange = change_model(SystemTemplate)
NetworkTemplateChange = change_model(NetworkTemplate)
StorageTemplateChange = change_model(StorageTemplate)
UserdataChange = change_model(Userdata)
ProfileChange = change_model(Profile)


# -- what the API answers ------------------------------------------------------------------------------------------
class Stamped(BaseModel):
    created: float
    updated: float


class SystemTemplateView(SystemTemplate, Stamped):
    profiles: Annotated[list[str], Field(description="the profiles that use it")] = []


class NetworkTemplateView(NetworkTemplate, Stamped):
    profiles: list[str] = []


class StorageTemplateView(StorageTemplate, Stamped):
    profiles: list[str] = []


class UserdataSummary(Stamped):
    name: str
    description: str
    kind: UserdataKind
    size: int
    profiles: list[str] = []


class UserdataView(UserdataSummary):
    body: str


class ProfileView(Profile, Stamped):
    pass


class ImageView(BaseModel):
    name: str
    description: str
    pool: str
    volume: str
    snapshot: str
    format: str
    size: int
    created: float
    storage_templates: Annotated[list[str], Field(description="storage templates that clone it")] = []
    profiles: Annotated[list[str], Field(description="profiles whose storage template clones it")] = []
    clones: Annotated[
        list[str] | None, Field(description="volumes cloned from its snapshot (pool/volume); one image's info only")
    ] = None


class OvaDisk(BaseModel):
    id: Annotated[str, Field(description="the disk's id in the VMs made from it (sda, sdb, ...: OVF order)")]
    pool: str
    volume: Annotated[str, Field(description="the converted disk, with the protected snapshot 'ova'")]
    format: Annotated[str, Field(description="its format inside the OVA")]
    size: int
    bus: str


class OvaNic(BaseModel):
    network: Annotated[str, Field(description="the OVF's network name")]
    model: str


class OvaView(BaseModel):
    name: str
    description: str
    vcpus: int
    memory_mib: int
    firmware: Firmware
    disks: list[OvaDisk]
    nics: list[OvaNic]
    created: float
    profiles: Annotated[list[str], Field(description="the profiles that make VMs from it")] = []
    clones: Annotated[
        list[str] | None, Field(description="volumes cloned from its disks (pool/volume); one OVA's info only")
    ] = None
