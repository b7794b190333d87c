"""The OVF descriptor reader (pvc.nodeos.provisioner.ovf): what PVC takes from a descriptor, and the refusals, each
saying what is wrong."""

from __future__ import annotations

import pytest

from pvc.nodeos.provisioner.ovf import OvfDisk, OvfError, OvfNic, parse, unit_bytes
from tests.harness.ova import OvfDisk as Disk
from tests.harness.ova import OvfSpec, ovf_xml

GiB = 1024**3


def spec(**kw) -> OvfSpec:
    base = {
        "vcpus": 4,
        "memory_mib": 2048,
        "disks": [Disk("a.vmdk", 10 * GiB), Disk("b.vmdk", GiB)],
        "nics": [("VM Network", "VmxNet3"), ("Backend", "E1000"), ("VM Network", "PCNet32")],
        "firmware": "efi",
    }
    return OvfSpec(**{**base, **kw})


def test_a_vmware_descriptor():
    ovf = parse(ovf_xml(spec()))
    assert (ovf.name, ovf.vcpus, ovf.memory_mib, ovf.firmware) == ("test-vm", 4, 2048, "uefi")
    assert ovf.disks == [
        OvfDisk("vmdisk0", "a.vmdk", "vmdk", 10 * GiB, "scsi"),
        OvfDisk("vmdisk1", "b.vmdk", "vmdk", GiB, "scsi"),
    ]
    assert ovf.nics == [OvfNic("VM Network", "virtio"), OvfNic("Backend", "e1000e"), OvfNic("VM Network", "rtl8139")]
    assert parse(ovf_xml(spec(firmware=None, nics=[]))).firmware == "bios"


@pytest.mark.parametrize(
    ("units", "expected"),
    [("byte", 1), ("byte * 2^20", 2**20), ("byte*2^30", 2**30), ("MegaBytes", 2**20), ("GB", 2**30)],
)
def test_allocation_units(units, expected):
    assert unit_bytes(units, "byte", "x") == expected


def test_huge_or_odd_powers_are_refused_without_computing_them():
    for units in ("byte * 10^999999999", "byte * 7^3", "byte * 2^61"):
        with pytest.raises(OvfError, match="only byte"):
            unit_bytes(units, "byte", "Disk d")


def test_unknown_units_are_refused():
    with pytest.raises(OvfError, match="unknown allocation units 'furlongs'"):
        unit_bytes("furlongs", "byte", "Disk d")


def refused(text: str) -> str:
    with pytest.raises(OvfError) as info:
        parse(text)
    return str(info.value)


def test_refusals_say_what_is_wrong():
    good = ovf_xml(spec())
    assert "not well-formed XML" in refused("<Envelope><oops></Envelope>")
    bomb = '<?xml version="1.0"?><!DOCTYPE e [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;">]><Envelope>&b;</Envelope>'
    assert "<!DOCTYPE>" in refused(bomb)
    external = '<?xml version="1.0"?><!DOCTYPE e [<!ENTITY x SYSTEM "file:///etc/passwd">]><Envelope>&x;</Envelope>'
    assert "<!DOCTYPE>" in refused(external)
    assert "root element is <domain>" in refused("<domain/>")
    assert "has 0 CPU items" in refused(good.replace("<rasd:ResourceType>3<", "<rasd:ResourceType>99<"))
    raw = good.replace(
        'ovf:format="http://www.vmware.com/interfaces/specifications/vmdk.html#streamOptimized"',
        'ovf:format="http://example.com/raw"',
        1,
    )
    assert "Disk vmdisk0: format 'http://example.com/raw' is not allowed (VMDK or qcow2)" in refused(raw)
    assert "is not a file name inside the OVA" in refused(good.replace('ovf:href="a.vmdk"', 'ovf:href="../etc/a"'))
    assert "is not a file name inside the OVA" in refused(good.replace('ovf:href="a.vmdk"', 'ovf:href="http://x/a"'))
    assert "is compressed (gzip)" in refused(
        good.replace('ovf:href="a.vmdk"', 'ovf:href="a.vmdk" ovf:compression="gzip"')
    )
    assert "names no DiskSection/Disk" in refused(good.replace("ovf:/disk/vmdisk1", "ovf:/disk/nosuch"))
    assert "VirtualQuantity is 'lots', not a whole number" in refused(
        good.replace(">4</rasd:VirtualQuantity>", ">lots</rasd:VirtualQuantity>")
    )
    two = good.replace("</VirtualSystem>", '</VirtualSystem><VirtualSystem ovf:id="b"/>')
    assert "has 2 VirtualSystem elements; PVC imports one" in refused(two)
    assert "no Connection" in refused(good.replace("<rasd:Connection>Backend</rasd:Connection>", ""))
