"""The typed VM definition: the product's one description of a VM (DESIGN.md decision 10).

The API takes it as JSON, the CLI builds it from options/YAML, `vmimport.import_xml` makes it from a libvirt domain
XML through an allowlist, and `vmrender.render` turns it into the XML one node starts. Everything a user may choose is
a field here, with an explicit bound; everything that only a node knows (accelerator, Ceph monitors, paths) is
not, and PVC always sets it when rendering. docs/vms.md lists the fields, defaults and bounds.

Definitions are immutable; change one with `changed()` (or the NIC/disk helpers), which validates the result.
"""

from __future__ import annotations

import re
import unicodedata
import uuid as uuidlib
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from pvc.config.choices import BootDevice, Firmware, Graphics, Machine, NicModel, Selector, VmMigrationMethod
from pvc.config.names import Name, check_name
from pvc.config.networks import MAX_VNI  # a VXLAN id; a bridged network's VLAN id (1-4094) fits too
from pvc.config.types import Mac, Size

MAX_VCPUS = 255  # x86 without an IOMMU/x2APIC set-up: QEMU's pc machine refuses more
MIN_MEMORY_MIB = 16
MAX_MEMORY_MIB = 4 * 1024 * 1024  # 4 TiB
MAX_DISKS = 16
MAX_NICS = 8
MAX_TAGS = 32
MAX_NODE_LIMIT = 64
MAX_DESCRIPTION = 1024
MAX_DISK_BYTES = 1024**5  # 1 PiB
MAX_DOWNTIME_MS = 60_000
MAX_MIGRATION_TIMEOUT_S = 86_400

DiskBus = Literal["virtio", "scsi", "sata"]
DiskCache = Literal["none", "writeback", "writethrough", "directsync"]
Discard = Literal["unmap", "ignore"]
DiskDevice = Literal["disk", "cdrom"]
ClockOffset = Literal["utc", "localtime"]

_NOT_TEXT = {"Cc", "Cf", "Cs", "Co", "Cn"}
_CPU_MODEL_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def _uuid(value: str) -> str:
    try:
        return str(uuidlib.UUID(value))
    except ValueError:
        raise ValueError(f"{value!r} is not a UUID") from None


def _cpu_model(value: str) -> str:
    if not _CPU_MODEL_RE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a CPU model name (like 'Skylake-Server' or 'EPYC'; letters, digits, '_', '.', '-')"
        )
    return value


def _text(value: str) -> str:
    """Printable text: line breaks and tabs, but no control, format (bidi overrides), private or unassigned
    characters, which could rewrite a terminal or be invalid in XML."""
    bad = next((c for c in value if unicodedata.category(c) in _NOT_TEXT and c not in "\n\t"), None)
    if bad is not None:
        raise ValueError(f"contains the non-printable character U+{ord(bad):04X}; use printable text")
    return value


def _volume(value: str) -> str:
    pool, sep, image = value.partition("/")
    if not sep:
        raise ValueError(f"{value!r} is not an RBD volume; give it as 'pool/volume'")
    check_name(pool, "pool name")
    check_name(image, "volume name")
    return value


def _unique(values: list[Any], what: str) -> None:
    seen: set[Any] = set()
    for v in values:
        if v in seen:
            raise ValueError(f"{what} {v!r} is given twice")
        seen.add(v)


Uuid = Annotated[str, AfterValidator(_uuid)]
CpuModel = Annotated[str, AfterValidator(_cpu_model)]
Volume = Annotated[str, Field(min_length=3, max_length=2 * 64 + 1), AfterValidator(_volume)]
Vni = Annotated[int, Field(ge=1, le=MAX_VNI)]


class Input(BaseModel):
    """Strict: no type coercion, unknown keys are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Topology(Input):
    """How the vCPUs appear to the guest; sockets × cores × threads must equal `vcpus`."""

    sockets: Annotated[int, Field(ge=1, le=MAX_VCPUS)] = 1
    cores: Annotated[int, Field(ge=1, le=MAX_VCPUS)] = 1
    threads: Annotated[int, Field(ge=1, le=8)] = 1

    @property
    def vcpus(self) -> int:
        return self.sockets * self.cores * self.threads


class Disk(Input):
    """An RBD volume attached to the VM. A cloud-init seed is a read-only cdrom volume."""

    volume: Annotated[Volume, Field(description="the RBD volume as 'pool/volume'")]
    device: DiskDevice = "disk"
    bus: Annotated[DiskBus | None, Field(description="default: virtio for a disk, sata for a cdrom")] = None
    cache: DiskCache = "none"
    discard: Discard = "unmap"
    size: Annotated[
        Size | None, Field(le=MAX_DISK_BYTES, description="bytes (or like '20G'): what the volume is made/resized to")
    ] = None
    read_only: Annotated[bool | None, Field(description="default: true for a cdrom, false for a disk")] = None

    @model_validator(mode="before")
    @classmethod
    def _device_defaults(cls, data: Any) -> Any:
        if isinstance(data, dict):
            cdrom = data.get("device") == "cdrom"
            if data.get("bus") is None:
                data = {**data, "bus": "sata" if cdrom else "virtio"}
            if data.get("read_only") is None:
                data = {**data, "read_only": cdrom}
        return data

    @model_validator(mode="after")
    def _cdrom(self) -> Disk:
        if self.device == "cdrom":
            if self.bus == "virtio":
                raise ValueError("a cdrom cannot be on the virtio bus; use 'sata' or 'scsi'")
            if not self.read_only:
                raise ValueError("a cdrom is always read-only")
        elif self.read_only and self.bus == "sata":
            raise ValueError(
                "a read-only disk cannot be on the sata bus (QEMU has no read-only SATA disk); use virtio or scsi"
            )
        return self

    @property
    def pool(self) -> str:
        return self.volume.partition("/")[0]

    @property
    def image(self) -> str:
        return self.volume.partition("/")[2]


class Nic(Input):
    """A network interface on a PVC network (its VNI); the node bridges it onto that network's bridge."""

    network: Annotated[Vni, Field(description="the network's VNI (a bridged network's VLAN id)")]
    mac: Annotated[Mac | None, Field(description="unicast MAC; PVC generates one when none is given")] = None
    model: NicModel = "virtio"


class Placement(Input):
    node_limit: Annotated[
        list[Name], Field(max_length=MAX_NODE_LIMIT, description="nodes it may run on; [] = any")
    ] = []
    selector: Annotated[Selector | None, Field(description="None: the cluster's [migration] selector")] = None
    autostart: bool = False

    @field_validator("node_limit")
    @classmethod
    def _nodes(cls, value: list[str]) -> list[str]:
        _unique(value, "node")
        return value


class Migration(Input):
    method: Annotated[VmMigrationMethod | None, Field(description="None: the cluster's [migration] method")] = None
    max_downtime_ms: Annotated[int | None, Field(ge=1, le=MAX_DOWNTIME_MS)] = None
    timeout_s: Annotated[
        int | None, Field(ge=1, le=MAX_MIGRATION_TIMEOUT_S, description="None: the cluster's migration timeout")
    ] = None


class VmDefinition(Input):
    name: Name
    uuid: Annotated[Uuid | None, Field(description="assigned at define when not given")] = None
    description: Annotated[str, Field(max_length=MAX_DESCRIPTION), AfterValidator(_text)] = ""
    vcpus: Annotated[int, Field(ge=1, le=MAX_VCPUS)] = 1
    topology: Topology | None = None
    memory_mib: Annotated[int, Field(ge=MIN_MEMORY_MIB, le=MAX_MEMORY_MIB)]
    machine: Machine = "q35"
    firmware: Firmware = "bios"
    boot: Annotated[list[BootDevice], Field(min_length=1, max_length=3)] = ["hd"]
    cpu_model: Annotated[
        CpuModel | None, Field(description="None: host-passthrough under KVM, QEMU's default under TCG")
    ] = None
    clock: ClockOffset = "utc"
    disks: Annotated[list[Disk], Field(max_length=MAX_DISKS)] = []
    nics: Annotated[list[Nic], Field(max_length=MAX_NICS)] = []
    serial_console: bool = True
    graphics: Annotated[Graphics, Field(description="always listening on 127.0.0.1 only")] = "none"
    rng: bool = True
    guest_agent: bool = True
    tags: Annotated[list[Name], Field(max_length=MAX_TAGS)] = []
    placement: Placement = Placement()
    migration: Migration = Migration()

    @field_validator("topology")
    @classmethod
    def _topology(cls, value: Topology | None, info: ValidationInfo) -> Topology | None:
        vcpus = info.data.get("vcpus")
        if value is not None and vcpus is not None and value.vcpus != vcpus:
            raise ValueError(
                f"{value.sockets} sockets × {value.cores} cores × {value.threads} threads = {value.vcpus}, "
                f"but vcpus is {vcpus}"
            )
        return value

    @field_validator("boot")
    @classmethod
    def _boot(cls, value: list[str]) -> list[str]:
        _unique(value, "boot device")
        return value

    @field_validator("disks")
    @classmethod
    def _disks(cls, value: list[Disk]) -> list[Disk]:
        _unique([d.volume for d in value], "volume")
        return value

    @field_validator("nics")
    @classmethod
    def _nics(cls, value: list[Nic]) -> list[Nic]:
        _unique([n.mac for n in value if n.mac is not None], "MAC address")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        _unique(value, "tag")
        return value

    # -- changing a definition (each returns a new, validated definition) ----------------------------------
    def changed(self, **fields: Any) -> VmDefinition:
        """This definition with `fields` replaced (e.g. `vcpus=4, topology=None`), validated as a whole."""
        return VmDefinition.model_validate({**self.model_dump(), **fields})

    def with_nic(self, nic: Nic) -> VmDefinition:
        return self.changed(nics=[*self.nics, nic])

    def without_nic(self, mac: str) -> VmDefinition:
        mac = mac.lower().replace("-", ":")
        if not any(n.mac == mac for n in self.nics):
            raise KeyError(f"VM {self.name} has no NIC with MAC {mac}")
        return self.changed(nics=[n for n in self.nics if n.mac != mac])

    def with_disk(self, disk: Disk) -> VmDefinition:
        return self.changed(disks=[*self.disks, disk])

    def without_disk(self, volume: str) -> VmDefinition:
        if not any(d.volume == volume for d in self.disks):
            raise KeyError(f"VM {self.name} has no disk on volume {volume}")
        return self.changed(disks=[d for d in self.disks if d.volume != volume])

    @property
    def volumes(self) -> list[str]:
        return [d.volume for d in self.disks]

    @property
    def networks(self) -> list[int]:
        """The VNIs of the networks its NICs are on (each once, in NIC order)."""
        return list(dict.fromkeys(n.network for n in self.nics))
