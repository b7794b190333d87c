"""An OVF descriptor (the `.ovf` of an OVA) read into what PVC makes of it: vCPUs, memory, firmware, disks, NICs.

Pure: text in, an `Ovf` out, or OvfError saying what is wrong and where. The XML is parsed by defusedxml with
DTDs forbidden (no entity declarations, so no billion laughs and no external entities) and a size bound. Elements
and attributes are matched by their local names, so OVF 1.x and 2.x (`Item`, `StorageItem`, `EthernetPortItem`) and
the usual vendor prefixes all read the same. One virtual system is imported; the rest of the descriptor (product,
EULA, annotations, vendor extensions other than VMware's firmware key) is ignored.

A disk's ordering is the order of its disk items in the hardware section (so the first boots); its bus comes from
its parent controller (IDE and SATA become sata, SCSI scsi, anything else virtio); a NIC's model from its
ResourceSubType (E1000/E1000e: e1000e; PCNet32: rtl8139; VmxNet3, VirtIO, anything else: virtio).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import defusedxml.ElementTree as SafeET
from defusedxml import DefusedXmlException

MAX_OVF_BYTES = 1024 * 1024
CPU, MEMORY, IDE, SCSI, ETHERNET, DISK, SATA = 3, 4, 5, 6, 10, 17, 20  # CIM ResourceType
FORMATS = {"vmdk": "vmdk", "qcow": "qcow2"}  # a fragment of the disk's format URI → the image format PVC reads
_UNITS = {"byte": 0, "kilobytes": 10, "kb": 10, "megabytes": 20, "mb": 20, "gigabytes": 30, "gb": 30, "tb": 40}
_UNIT_RE = re.compile(r"^byte\s*(?:\*\s*(\d+)\s*\^\s*(\d+))?$", re.IGNORECASE)
_NIC_MODELS = {"e1000": "e1000e", "e1000e": "e1000e", "pcnet32": "rtl8139"}
_BUSES = {IDE: "sata", SATA: "sata", SCSI: "scsi"}


class OvfError(ValueError):
    """The descriptor is not one PVC can import; the message says what and where."""


@dataclass(frozen=True)
class OvfDisk:
    disk_id: str  # the OVF's ovf:diskId
    href: str  # the archive member holding it
    format: str  # an image format PVC reads: vmdk or qcow2
    capacity: int  # bytes, as the OVF says
    bus: str


@dataclass(frozen=True)
class OvfNic:
    network: str  # the OVF's network name
    model: str


@dataclass(frozen=True)
class Ovf:
    name: str  # the virtual system's ovf:id
    vcpus: int
    memory_mib: int
    firmware: str  # bios or uefi
    disks: list[OvfDisk]
    nics: list[OvfNic]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _attr(el: ET.Element, name: str) -> str | None:
    for key, value in el.attrib.items():
        if _local(key) == name:
            return value
    return None


def _child(el: ET.Element, name: str) -> ET.Element | None:
    return next((c for c in el if _local(c.tag) == name), None)


def _children(el: ET.Element, name: str) -> list[ET.Element]:
    return [c for c in el if _local(c.tag) == name]


def _text(el: ET.Element, name: str) -> str | None:
    c = _child(el, name)
    return c.text.strip() if c is not None and c.text is not None else None


def _int(value: str | None, what: str) -> int:
    if value is None or not re.fullmatch(r"\s*[0-9]{1,20}\s*", value):
        raise OvfError(f"{what} is {value!r}, not a whole number")
    return int(value)


def unit_bytes(units: str | None, default: str, what: str) -> int:
    """Bytes per unit of an OVF allocation unit such as 'byte * 2^20' (the programmatic form) or 'MegaBytes'."""
    text = (units or default).strip()
    match = _UNIT_RE.fullmatch(text)
    if match:
        if not match.group(1):
            return 1
        base, power = int(match.group(1)), int(match.group(2))
        if base not in (2, 10) or power > 60:  # never compute 10^999999999 for a hostile descriptor
            raise OvfError(f"{what}: allocation units {text!r}: only byte * 2^N or byte * 10^N with N ≤ 60")
        return base**power
    if text.lower() in _UNITS:
        return 2 ** _UNITS[text.lower()]
    raise OvfError(f"{what}: unknown allocation units {text!r} (like 'byte * 2^20')")


def parse(text: str | bytes) -> Ovf:
    """The virtual system an OVF descriptor describes; OvfError saying what is wrong."""
    if len(text) > MAX_OVF_BYTES:
        raise OvfError(f"the descriptor is {len(text)} bytes; at most {MAX_OVF_BYTES} are accepted")
    try:
        root = SafeET.fromstring(text, forbid_dtd=True)
    except DefusedXmlException:
        raise OvfError("the descriptor has a <!DOCTYPE> or entity declarations, which an OVF does not") from None
    except ET.ParseError as exc:
        raise OvfError(f"not well-formed XML: {exc}") from None
    if _local(root.tag) != "Envelope":
        raise OvfError(f"the root element is <{_local(root.tag)}>; an OVF descriptor has <Envelope>")
    files = _files(root)
    disks = _disk_section(root, files)
    system = _virtual_system(root)
    hardware = _child(system, "VirtualHardwareSection")
    if hardware is None:
        raise OvfError("VirtualSystem has no VirtualHardwareSection")
    items = [c for c in hardware if _local(c.tag) in ("Item", "StorageItem", "EthernetPortItem")]
    kinds = [(_int(_text(i, "ResourceType"), "an item's ResourceType"), i) for i in items]
    return Ovf(
        name=_attr(system, "id") or "",
        vcpus=_quantity(kinds, CPU, "CPU", None),
        memory_mib=max(1, _quantity(kinds, MEMORY, "memory", "byte * 2^20") // 2**20),
        firmware=_firmware(hardware),
        disks=_ordered_disks(kinds, disks),
        nics=[_nic(i) for kind, i in kinds if kind == ETHERNET],
    )


def _files(root: ET.Element) -> dict[str, str]:
    refs = _child(root, "References")
    out: dict[str, str] = {}
    for f in _children(refs, "File") if refs is not None else []:
        file_id, href = _attr(f, "id"), _attr(f, "href")
        if not file_id or not href:
            raise OvfError("References/File needs ovf:id and ovf:href")
        if "/" in href or "\\" in href or href in (".", "..") or ":" in href:
            raise OvfError(f"File {file_id}: href {href!r} is not a file name inside the OVA")
        if _attr(f, "compression"):
            raise OvfError(f"File {file_id} ({href}) is compressed ({_attr(f, 'compression')}); unpack it first")
        out[file_id] = href
    return out


def _disk_section(root: ET.Element, files: dict[str, str]) -> dict[str, tuple[str, str, int]]:
    """disk id → (member, format, capacity in bytes)."""
    section = _child(root, "DiskSection")
    out: dict[str, tuple[str, str, int]] = {}
    for d in _children(section, "Disk") if section is not None else []:
        disk_id = _attr(d, "diskId")
        if not disk_id:
            raise OvfError("DiskSection/Disk needs ovf:diskId")
        ref = _attr(d, "fileRef")
        if not ref:
            raise OvfError(f"Disk {disk_id} has no ovf:fileRef: an empty disk is not imported")
        if ref not in files:
            raise OvfError(f"Disk {disk_id}: fileRef {ref!r} names no References/File")
        uri = _attr(d, "format") or ""
        fmt = next((f for key, f in FORMATS.items() if key in uri.lower()), None)
        if fmt is None:
            raise OvfError(f"Disk {disk_id}: format {uri!r} is not allowed (VMDK or qcow2)")
        units = unit_bytes(_attr(d, "capacityAllocationUnits"), "byte", f"Disk {disk_id}")
        capacity = _int(_attr(d, "capacity"), f"Disk {disk_id}'s capacity") * units
        if capacity <= 0:
            raise OvfError(f"Disk {disk_id} has no capacity")
        out[disk_id] = (files[ref], fmt, capacity)
    return out


def _virtual_system(root: ET.Element) -> ET.Element:
    systems = _children(root, "VirtualSystem")
    if _child(root, "VirtualSystemCollection") is not None:
        raise OvfError("the OVA holds a VirtualSystemCollection; PVC imports an OVA of one virtual system")
    if len(systems) != 1:
        raise OvfError(f"the descriptor has {len(systems)} VirtualSystem elements; PVC imports one")
    return systems[0]


def _quantity(kinds: list[tuple[int, ET.Element]], kind: int, what: str, units: str | None) -> int:
    found = [i for k, i in kinds if k == kind]
    if len(found) != 1:
        raise OvfError(f"VirtualHardwareSection has {len(found)} {what} items (ResourceType {kind}); one is needed")
    value = _int(_text(found[0], "VirtualQuantity"), f"the {what} item's VirtualQuantity")
    if units is not None:
        value *= unit_bytes(_text(found[0], "AllocationUnits"), units, f"the {what} item")
    if value <= 0:
        raise OvfError(f"the {what} item's VirtualQuantity is 0")
    return value


def _firmware(hardware: ET.Element) -> str:
    for config in _children(hardware, "Config"):
        if _attr(config, "key") == "firmware":
            return "uefi" if (_attr(config, "value") or "").lower() == "efi" else "bios"
    return "bios"


def _ordered_disks(kinds: list[tuple[int, ET.Element]], disks: dict[str, tuple[str, str, int]]) -> list[OvfDisk]:
    controllers = {_text(i, "InstanceID"): k for k, i in kinds if k in _BUSES}
    out: list[OvfDisk] = []
    for kind, item in kinds:
        if kind != DISK:
            continue
        host = _text(item, "HostResource") or ""
        disk_id = host.rsplit("/", 1)[-1]
        if not re.match(r"^(ovf:)?/disk/", host) or disk_id not in disks:
            raise OvfError(f"disk item {_text(item, 'InstanceID')}: HostResource {host!r} names no DiskSection/Disk")
        if any(d.disk_id == disk_id for d in out):
            raise OvfError(f"disk {disk_id} is attached twice")
        href, fmt, capacity = disks[disk_id]
        bus = _BUSES.get(controllers.get(_text(item, "Parent"), 0), "virtio")
        out.append(OvfDisk(disk_id, href, fmt, capacity, bus))
    if not out and disks:
        raise OvfError("no disk item (ResourceType 17) attaches a DiskSection disk")
    return out


def _nic(item: ET.Element) -> OvfNic:
    network = _text(item, "Connection")
    if not network:
        raise OvfError(f"NIC item {_text(item, 'InstanceID')} has no Connection (its network)")
    subtype = (_text(item, "ResourceSubType") or "").lower()
    return OvfNic(network, _NIC_MODELS.get(subtype, "virtio"))
