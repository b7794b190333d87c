"""What changes of a running VM's definition its node applies live, and what waits for the next start (pure).

A running domain is compared with the VM's definition: NICs are plugged in, unplugged or moved to another network
live (libvirt attach/detach/update of the `<interface>`), and RBD disks are plugged in or unplugged (attach/detach
of the `<disk>`, on a target device the domain has free); every other difference of the guest's hardware (memory,
vCPUs, a disk's bus or cache, a NIC's model, ...) applies when the VM next starts, and the VM's status says so
(`pending`). PVC's own data (description, tags, placement, migration) needs no restart: PVC reads it from the
definition.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from pvc.config.networks import bridge_name
from pvc.nodeos.state.vmdef import Disk, Nic, VmDefinition
from pvc.nodeos.state.vmimport import import_xml
from pvc.nodeos.state.vmrender import PVC_NS, target_name

# Fields of a definition that a running VM does not need: PVC reads them from the definition, never from libvirt.
PVC_ONLY = frozenset({"name", "uuid", "description", "tags", "placement", "migration"})
LIVE = frozenset({"nics"})  # applied to the running domain (disks: only which volumes, see disk_plan)


@dataclass(frozen=True)
class LiveNic:
    """An `<interface>` of a running domain as libvirt reports it."""

    mac: str
    bridge: str
    model: str

    @property
    def network(self) -> int | None:
        """The VNI of its PVC bridge (vmbr<N>), or None for anything else."""
        name = self.bridge
        if name.startswith("vmbr") and name[4:].isdigit():
            return int(name[4:])
        return None


@dataclass(frozen=True)
class Plan:
    """What to do to a running domain so that its NICs are the definition's."""

    attach: list[Nic] = field(default_factory=list)
    detach: list[LiveNic] = field(default_factory=list)
    move: list[Nic] = field(default_factory=list)  # same MAC and model, another network: its source bridge changes
    pending: list[str] = field(default_factory=list)  # NIC changes that wait for the next start

    @property
    def empty(self) -> bool:
        return not (self.attach or self.detach or self.move)


def live_nics(xml: str) -> list[LiveNic]:
    """The bridge interfaces of a domain XML (libvirt's live XML of a running domain)."""
    root = ET.fromstring(xml)
    out = []
    for iface in root.iterfind("./devices/interface"):
        mac = iface.find("mac")
        source = iface.find("source")
        model = iface.find("model")
        if mac is None or mac.get("address") is None:
            continue
        out.append(
            LiveNic(
                mac=(mac.get("address") or "").lower(),
                bridge=source.get("bridge", "") if source is not None else "",
                model=model.get("type", "") if model is not None else "",
            )
        )
    return out


def nic_plan(live: list[LiveNic], wanted: list[Nic]) -> Plan:
    """Attach the wanted NICs the domain lacks, detach the ones it has beyond them, move a NIC whose network changed;
    a NIC whose model changed keeps running as it is until the next start."""
    have = {n.mac: n for n in live}
    want = {n.mac: n for n in wanted if n.mac}
    plan = Plan(detach=[n for n in live if n.mac not in want])
    for mac, nic in want.items():
        running = have.get(mac)
        if running is None:
            plan.attach.append(nic)
        elif running.model != nic.model:
            plan.pending.append(f"NIC {mac}: model {running.model} -> {nic.model} (at the next start)")
        elif running.bridge != bridge_name(nic.network):
            plan.move.append(nic)
    return plan


@dataclass(frozen=True)
class LiveDisk:
    """An RBD `<disk>` of a running domain as libvirt reports it."""

    volume: str
    target: str
    bus: str
    xml: str  # the element itself: what a detach names (libvirt finds the disk by its target)


@dataclass(frozen=True)
class DiskPlan:
    """What to do to a running domain so that its RBD disks are the definition's volumes."""

    attach: list[tuple[Disk, str]] = field(default_factory=list)  # the disk and a free target device for it
    detach: list[LiveDisk] = field(default_factory=list)
    scsi_controller: bool = False  # attach a virtio-scsi controller first: a SCSI disk needs one

    @property
    def empty(self) -> bool:
        return not (self.attach or self.detach)


SCSI_CONTROLLER_XML = "<controller type='scsi' index='0' model='virtio-scsi'/>\n"


def live_disks(xml: str) -> list[LiveDisk]:
    """The RBD disks of a domain XML (libvirt's live XML of a running domain)."""
    out = []
    for disk in ET.fromstring(xml).iterfind("./devices/disk"):
        source, target = disk.find("source"), disk.find("target")
        if source is None or target is None or source.get("protocol") != "rbd":
            continue
        out.append(
            LiveDisk(
                volume=source.get("name", ""),
                target=target.get("dev", ""),
                bus=target.get("bus", ""),
                xml=ET.tostring(disk, encoding="unicode"),
            )
        )
    return out


def disk_plan(xml: str, wanted: list[Disk]) -> DiskPlan:
    """Attach the wanted volumes the domain lacks (each on the first free target of its bus's names), detach the
    volumes it has beyond them. A volume it has keeps running as it is (a new bus or cache waits for the next
    start: `pending_fields` says so)."""
    live = live_disks(xml)
    have = {d.volume for d in live}
    want = {d.volume for d in wanted}
    used = {d.target for d in live}
    attach = []
    for disk in wanted:
        if disk.volume in have:
            continue
        prefix = "vd" if disk.bus == "virtio" else "sd"
        target = next(t for i in range(26 * 27) if (t := target_name(prefix, i)) not in used)
        used.add(target)
        attach.append((disk, target))
    scsi = (
        any(d.bus == "scsi" for d, _ in attach)
        and ET.fromstring(xml).find("./devices/controller[@type='scsi']") is None
    )
    return DiskPlan(attach=attach, detach=[d for d in live if d.volume not in want], scsi_controller=scsi)


def running_definition(live_xml: str) -> VmDefinition:
    """The definition a running domain amounts to: libvirt's live XML imported through the allowlist, without the
    security labels and disk block-node indexes libvirt adds at run time (this is for comparing, never for
    libvirt), and without PVC's metadata entries of disks unplugged since it started. VmXmlError when it does not import."""
    root = ET.fromstring(live_xml)
    for parent in [root, *root.iter()]:
        for label in parent.findall("seclabel"):
            parent.remove(label)
    for disk in root.iterfind("./devices/disk"):  # what libvirt adds to a running disk: its block node's index
        for source in disk.findall("source"):
            source.attrib.pop("index", None)
        for backing in disk.findall("backingStore"):
            disk.remove(backing)
    plugged = {d.volume for d in live_disks(live_xml)}
    for vm in root.iterfind(f"./metadata/{{{PVC_NS}}}vm"):
        for entry in vm.findall(f"{{{PVC_NS}}}disk"):
            if entry.get("volume") not in plugged:
                vm.remove(entry)
    return import_xml(ET.tostring(root, encoding="unicode"))


def pending_fields(running: VmDefinition, wanted: VmDefinition) -> list[str]:
    """The definition's changes, beyond its NICs and PVC's own data, that apply only when the VM next starts."""
    out = []
    for name in VmDefinition.model_fields:
        if name in PVC_ONLY or name in LIVE:
            continue
        before, after = getattr(running, name), getattr(wanted, name)
        if before != after:
            out.append(f"{name}: {_show(before)} -> {_show(after)} (at the next start)")
    return out


def _show(value: object) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_show(v) for v in value) + "]"
    if isinstance(value, Disk):
        return value.volume
    if hasattr(value, "model_dump"):
        dumped = value.model_dump(mode="json", exclude_defaults=True)
        return ",".join(f"{k}={v}" for k, v in dumped.items()) or "default"
    return str(value)


def detach_xml(nic: LiveNic) -> str:
    """The interface to unplug as libvirt finds it: by its MAC, with the bridge and model it runs with."""
    el = ET.Element("interface", type="bridge")
    ET.SubElement(el, "mac", address=nic.mac)
    ET.SubElement(el, "source", bridge=nic.bridge)
    if nic.model:
        ET.SubElement(el, "model", type=nic.model)
    return ET.tostring(el, encoding="unicode") + "\n"
