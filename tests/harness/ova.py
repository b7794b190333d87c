"""Small OVAs for tests: an OVF descriptor written from a few facts, and the tar archive holding it and its disks
(each disk a VMDK, stream-optimized, that qemu-img makes from raw bytes)."""

from __future__ import annotations

import io
import subprocess
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

VMDK_URI = "http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"


@dataclass
class OvfDisk:
    href: str
    capacity: int  # bytes
    format: str = VMDK_URI


@dataclass
class OvfSpec:
    vcpus: int = 2
    memory_mib: int = 512
    disks: list[OvfDisk] = field(default_factory=list)
    nics: list[tuple[str, str]] = field(default_factory=list)  # (network name, ResourceSubType)
    firmware: str | None = None  # VMware's firmware key: "efi" or "bios"


def ovf_xml(spec: OvfSpec) -> str:
    """An OVF 1.0 descriptor as VMware writes one, with a SCSI controller the disks hang off."""
    files = "".join(f'<File ovf:id="file{i}" ovf:href="{d.href}"/>' for i, d in enumerate(spec.disks))
    disks = "".join(
        f'<Disk ovf:diskId="vmdisk{i}" ovf:fileRef="file{i}" ovf:capacity="{d.capacity}" '
        f'ovf:capacityAllocationUnits="byte" ovf:format="{d.format}"/>'
        for i, d in enumerate(spec.disks)
    )
    networks = "".join(
        f'<Network ovf:name="{n}"><Description/></Network>' for n in dict.fromkeys(n for n, _ in spec.nics)
    )
    items = [
        "<Item><rasd:AllocationUnits>hertz * 10^6</rasd:AllocationUnits><rasd:InstanceID>1</rasd:InstanceID>"
        f"<rasd:ResourceType>3</rasd:ResourceType><rasd:VirtualQuantity>{spec.vcpus}</rasd:VirtualQuantity></Item>",
        "<Item><rasd:AllocationUnits>byte * 2^20</rasd:AllocationUnits><rasd:InstanceID>2</rasd:InstanceID>"
        f"<rasd:ResourceType>4</rasd:ResourceType><rasd:VirtualQuantity>{spec.memory_mib}</rasd:VirtualQuantity></Item>",
        "<Item><rasd:InstanceID>3</rasd:InstanceID><rasd:ResourceSubType>lsilogic</rasd:ResourceSubType>"
        "<rasd:ResourceType>6</rasd:ResourceType></Item>",
    ]
    for i in range(len(spec.disks)):
        items.append(
            f"<Item><rasd:AddressOnParent>{i}</rasd:AddressOnParent><rasd:HostResource>ovf:/disk/vmdisk{i}"
            f"</rasd:HostResource><rasd:InstanceID>{10 + i}</rasd:InstanceID><rasd:Parent>3</rasd:Parent>"
            "<rasd:ResourceType>17</rasd:ResourceType></Item>"
        )
    for i, (network, subtype) in enumerate(spec.nics):
        items.append(
            f"<Item><rasd:Connection>{network}</rasd:Connection><rasd:InstanceID>{20 + i}</rasd:InstanceID>"
            f"<rasd:ResourceSubType>{subtype}</rasd:ResourceSubType><rasd:ResourceType>10</rasd:ResourceType></Item>"
        )
    firmware = (
        f'<vmw:Config ovf:required="false" vmw:key="firmware" vmw:value="{spec.firmware}"/>' if spec.firmware else ""
    )
    return (
        '<?xml version="1.0" encoding="UTF-8"?>\n'
        '<Envelope xmlns="http://schemas.dmtf.org/ovf/envelope/1" xmlns:ovf="http://schemas.dmtf.org/ovf/envelope/1"'
        ' xmlns:rasd="http://schemas.dmtf.org/wbem/wscim/1/cim-schema/2/CIM_ResourceAllocationSettingData"'
        ' xmlns:vmw="http://www.vmware.com/schema/ovf">\n'
        f"<References>{files}</References>\n"
        f"<DiskSection><Info>Virtual disks</Info>{disks}</DiskSection>\n"
        f"<NetworkSection><Info>Networks</Info>{networks}</NetworkSection>\n"
        '<VirtualSystem ovf:id="test-vm"><Info>A test VM</Info>\n'
        f"<VirtualHardwareSection><Info>Hardware</Info>{''.join(items)}{firmware}</VirtualHardwareSection>\n"
        "</VirtualSystem>\n</Envelope>\n"
    )


def vmdk(raw: bytes, folder: Path, name: str) -> bytes:
    """`raw` as a stream-optimized VMDK (qemu-img convert)."""
    src, out = folder / f"{name}.raw", folder / f"{name}.vmdk"
    src.write_bytes(raw)
    subprocess.run(
        ["qemu-img", "convert", "-f", "raw", "-O", "vmdk", "-o", "subformat=streamOptimized", str(src), str(out)],
        check=True,
    )
    return out.read_bytes()


def tar(members: dict[str, bytes]) -> bytes:
    """A ustar archive of `members`, in order (the .ovf first, as the OVF specification asks)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buf.getvalue()
