"""Pure functions over libvirt domain XML: the facts PVC needs from it, and the console log it adds.

Here, below the daemon, because defining a VM (state.actions) parses its XML as much as running it does. An interim
home: the typed VM model of DESIGN.md decision 10 replaces it.
"""

from __future__ import annotations

import uuid as uuidlib
import xml.etree.ElementTree as ET
from dataclasses import dataclass

_UNITS = {
    "b": 1,
    "bytes": 1,
    "k": 1024,
    "kib": 1024,
    "kb": 1000,
    "m": 1024**2,
    "mib": 1024**2,
    "mb": 1000**2,
    "g": 1024**3,
    "gib": 1024**3,
    "gb": 1000**3,
    "t": 1024**4,
    "tib": 1024**4,
    "tb": 1000**4,
}


class DomainXmlError(ValueError):
    """The XML is not a libvirt domain PVC can run; the message says what is wrong."""


@dataclass(frozen=True)
class DomainFacts:
    name: str
    uuid: str
    memory_mib: int
    vcpus: int
    rbd_disks: list[str]  # "pool/image"


def parse(xml: str) -> DomainFacts:
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DomainXmlError(f"not well-formed XML: {exc}") from None
    if root.tag != "domain":
        raise DomainXmlError(f"the root element is <{root.tag}>, expected <domain>")
    name = (root.findtext("name") or "").strip()
    if not name:
        raise DomainXmlError("the domain has no <name>")
    check_name(name)
    raw_uuid = (root.findtext("uuid") or "").strip()
    try:
        vm_uuid = str(uuidlib.UUID(raw_uuid)) if raw_uuid else ""
    except ValueError:
        raise DomainXmlError(f"<uuid> '{raw_uuid}' is not a UUID") from None
    memory = root.find("memory")
    memory_text = "" if memory is None else (memory.text or "").strip()
    if memory is None or not memory_text:
        raise DomainXmlError("the domain has no <memory>")
    try:
        amount = int(memory_text)
    except ValueError:
        raise DomainXmlError(f"<memory> '{memory.text}' is not a number") from None
    unit = memory.get("unit", "KiB").lower()
    if unit not in _UNITS:
        raise DomainXmlError(f"<memory unit='{unit}'> is not a unit libvirt knows")
    vcpu_text = (root.findtext("vcpu") or "1").strip()
    try:
        vcpus = int(vcpu_text)
    except ValueError:
        raise DomainXmlError(f"<vcpu> '{vcpu_text}' is not a number") from None
    disks = [
        src.get("name", "")
        for src in root.findall("./devices/disk[@type='network']/source[@protocol='rbd']")
        if src.get("name")
    ]
    return DomainFacts(name, vm_uuid, max(1, amount * _UNITS[unit] // 1024**2), max(1, vcpus), disks)


def check_name(name: str) -> None:
    """Raise DomainXmlError unless `name` can name a VM."""
    if not name or any(c in name for c in "/\\ \t\n") or len(name) > 64:
        raise DomainXmlError(f"the domain name '{name}' must be 1-64 characters without spaces or slashes")


def with_name(xml: str, name: str) -> str:
    """The XML with <name> set to `name`."""
    check_name(name)
    root = ET.fromstring(xml)
    node = root.find("name")
    if node is None:
        node = ET.Element("name")
        root.insert(0, node)
    node.text = name
    return ET.tostring(root, encoding="unicode")


def with_uuid(xml: str, vm_uuid: str) -> str:
    """The XML with <uuid> set to `vm_uuid` (added when missing)."""
    root = ET.fromstring(xml)
    node = root.find("uuid")
    if node is None:
        node = ET.Element("uuid")
        name = root.find("name")
        root.insert(list(root).index(name) + 1 if name is not None else 0, node)
    node.text = vm_uuid
    return ET.tostring(root, encoding="unicode")


def with_console_log(xml: str, log_path: str) -> str:
    """The XML with the first serial port logging to `log_path` (a pty serial port is added if there is none).

    The log is opened in append mode so that pvcd can truncate it while QEMU writes.
    """
    root = ET.fromstring(xml)
    devices = root.find("devices")
    if devices is None:
        devices = ET.SubElement(root, "devices")
    serial = devices.find("serial")
    if serial is None:
        serial = ET.SubElement(devices, "serial", {"type": "pty"})
        ET.SubElement(serial, "target", {"port": "0"})
    for old in serial.findall("log"):
        serial.remove(old)
    ET.SubElement(serial, "log", {"file": log_path, "append": "on"})
    return ET.tostring(root, encoding="unicode")


def bridges(xml: str) -> list[str]:
    """The host bridges the domain's interfaces are plugged into (`<interface type='bridge'><source bridge=...>`)."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return []
    found = (iface.find("source") for iface in root.iterfind("./devices/interface[@type='bridge']"))
    return [src.get("bridge", "") for src in found if src is not None and src.get("bridge")]
