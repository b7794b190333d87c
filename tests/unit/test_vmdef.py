"""The typed VM definition (nodeos/state/vmdef.py): defaults, every bound, and the helpers that change it."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel, ValidationError

from pvc.config import choices
from pvc.config.networks import MAX_VNI
from pvc.nodeos.state import vmdef
from pvc.nodeos.state.vmdef import Disk, Nic, VmDefinition

MIN = {"name": "web1", "memory_mib": 1024}


def make(**fields: Any) -> VmDefinition:
    return VmDefinition.model_validate({**MIN, **fields})


def refused(match: str, **fields: Any) -> None:
    with pytest.raises(ValidationError, match=match):
        make(**fields)


def test_defaults():
    d = make()
    assert (d.vcpus, d.topology, d.machine, d.firmware, d.boot, d.cpu_model, d.clock) == (
        1,
        None,
        "q35",
        "bios",
        ["hd"],
        None,
        "utc",
    )
    assert (d.disks, d.nics, d.tags, d.uuid, d.description) == ([], [], [], None, "")
    assert (d.serial_console, d.graphics, d.rng, d.guest_agent) == (True, "none", True, True)
    assert d.placement == vmdef.Placement() and d.migration == vmdef.Migration()


def test_name_and_memory_are_required():
    with pytest.raises(ValidationError, match="name\n  Field required"):
        VmDefinition.model_validate({"memory_mib": 1024})
    with pytest.raises(ValidationError, match="memory_mib\n  Field required"):
        VmDefinition.model_validate({"name": "x"})


def test_the_enums_are_the_shared_ones():
    def annotation(model: type[BaseModel], field: str) -> object:
        return model.model_fields[field].annotation

    assert annotation(VmDefinition, "machine") is choices.Machine
    assert annotation(VmDefinition, "firmware") is choices.Firmware
    assert annotation(vmdef.Placement, "selector") == choices.Selector | None
    assert annotation(vmdef.Migration, "method") == choices.VmMigrationMethod | None


@pytest.mark.parametrize(
    ("field", "ok", "bad"),
    [
        ("vcpus", [1, vmdef.MAX_VCPUS], [0, vmdef.MAX_VCPUS + 1, -1]),
        (
            "memory_mib",
            [vmdef.MIN_MEMORY_MIB, vmdef.MAX_MEMORY_MIB],
            [vmdef.MIN_MEMORY_MIB - 1, vmdef.MAX_MEMORY_MIB + 1],
        ),
    ],
)
def test_numeric_bounds(field, ok, bad):
    for value in ok:
        assert getattr(make(**{field: value}), field) == value
    for value in bad:
        refused(field, **{field: value})


def test_strict_types():
    refused("vcpus", vcpus="2")
    refused("vcpus", vcpus=2.0)
    refused("serial_console", serial_console="yes")
    refused("memory_mib", memory_mib="1G")


def test_unknown_keys_are_refused_at_every_level():
    refused("Extra inputs are not permitted", xml="<domain/>")
    refused("Extra inputs are not permitted", disks=[{"volume": "p/v", "file": "/etc/shadow"}])
    refused("Extra inputs are not permitted", nics=[{"network": 1, "type": "direct"}])
    refused("Extra inputs are not permitted", placement={"pin": "n1"})
    refused("Extra inputs are not permitted", migration={"speed": 1})
    refused("Extra inputs are not permitted", topology={"sockets": 1, "dies": 1})


@pytest.mark.parametrize(
    ("field", "limit", "item"),
    [
        ("disks", vmdef.MAX_DISKS, lambda i: {"volume": f"vms/d{i}"}),
        ("nics", vmdef.MAX_NICS, lambda i: {"network": i + 1}),
        ("tags", vmdef.MAX_TAGS, lambda i: f"t{i}"),
    ],
)
def test_list_bounds(field, limit, item):
    assert len(getattr(make(**{field: [item(i) for i in range(limit)]}), field)) == limit
    refused(f"at most {limit} items", **{field: [item(i) for i in range(limit + 1)]})


def test_node_limit_bound():
    nodes = [f"n{i}" for i in range(vmdef.MAX_NODE_LIMIT)]
    assert make(placement={"node_limit": nodes}).placement.node_limit == nodes
    refused(f"at most {vmdef.MAX_NODE_LIMIT} items", placement={"node_limit": [*nodes, "extra"]})


@pytest.mark.parametrize("name", ["a:b", "a/b", "a@b", "a b", "-a", ".a", "a\x1b", "x" * 65, ""])
def test_names_use_the_shared_pattern(name):
    refused("name", name=name)
    refused("tags", tags=[name])
    refused("node_limit", placement={"node_limit": [name]})
    refused("volume", disks=[{"volume": f"{name}/v"}])
    refused("volume", disks=[{"volume": f"p/{name}"}])


def test_duplicates_are_refused():
    refused("tag 'a' is given twice", tags=["a", "a"])
    refused("node 'n1' is given twice", placement={"node_limit": ["n1", "n1"]})
    refused("boot device 'hd' is given twice", boot=["hd", "hd"])
    refused("volume 'p/v' is given twice", disks=[{"volume": "p/v"}, {"volume": "p/v", "device": "cdrom"}])
    refused(
        "MAC address '52:54:00:00:00:01' is given twice",
        nics=[{"network": 1, "mac": "52:54:00:00:00:01"}, {"network": 2, "mac": "52:54:00:00:00:01"}],
    )
    assert len(make(nics=[{"network": 1}, {"network": 1}]).nics) == 2  # two NICs on one network, MACs unset


def test_boot_order():
    assert make(boot=["cdrom", "hd", "network"]).boot == ["cdrom", "hd", "network"]
    refused("boot", boot=[])
    refused("boot", boot=["fd"])


def test_topology_must_multiply_to_vcpus():
    d = make(vcpus=8, topology={"sockets": 2, "cores": 2, "threads": 2})
    assert d.topology is not None and d.topology.vcpus == 8
    refused(r"2 sockets × 2 cores × 1 threads = 4, but vcpus is 8", vcpus=8, topology={"sockets": 2, "cores": 2})
    refused("threads", vcpus=9, topology={"threads": 9})
    refused("sockets", topology={"sockets": 0})


def test_cpu_model():
    assert make(cpu_model="Skylake-Server-IBRS").cpu_model == "Skylake-Server-IBRS"
    for bad in ["", "host passthrough", "-x", "a;b", "x" * 65]:
        refused("cpu_model", cpu_model=bad)


def test_uuid_is_normalised():
    assert make(uuid="C0FFEE00-0000-4000-8000-00000000000A").uuid == "c0ffee00-0000-4000-8000-00000000000a"
    refused("is not a UUID", uuid="not-a-uuid")


def test_description():
    assert make(description="line one\n\tline two").description == "line one\n\tline two"
    refused(r"U\+001B", description="\x1b[2J")
    refused(r"U\+202E", description="invoice\u202etxt.exe")  # a bidi override
    refused(r"U\+FFFF", description="\uffff")  # not a character XML can carry
    assert make(description="caf\u00e9\u00a0\u2014 \u2028ok").description.startswith("café")
    refused("description", description="x" * (vmdef.MAX_DESCRIPTION + 1))


def test_disk_defaults_depend_on_the_device():
    disk, cdrom = make(disks=[{"volume": "vms/root"}, {"volume": "vms/seed", "device": "cdrom"}]).disks
    assert (disk.bus, disk.read_only, disk.cache, disk.discard, disk.size) == ("virtio", False, "none", "unmap", None)
    assert (cdrom.bus, cdrom.read_only) == ("sata", True)
    assert (disk.pool, disk.image) == ("vms", "root")


def test_disk_rules():
    refused("a cdrom cannot be on the virtio bus", disks=[{"volume": "p/s", "device": "cdrom", "bus": "virtio"}])
    refused("a cdrom is always read-only", disks=[{"volume": "p/s", "device": "cdrom", "read_only": False}])
    refused("a read-only disk cannot be on the sata bus", disks=[{"volume": "p/v", "bus": "sata", "read_only": True}])
    assert make(disks=[{"volume": "p/v", "bus": "scsi", "read_only": True}]).disks[0].read_only
    refused("is not an RBD volume; give it as 'pool/volume'", disks=[{"volume": "justaname"}])
    refused("volume name 'b/c' contains '/'", disks=[{"volume": "a/b/c"}])
    refused("bus", disks=[{"volume": "p/v", "bus": "ide"}])
    refused("cache", disks=[{"volume": "p/v", "cache": "unsafe"}])
    refused("discard", disks=[{"volume": "p/v", "discard": "on"}])
    refused("device", disks=[{"volume": "p/v", "device": "floppy"}])


def test_disk_size():
    assert make(disks=[{"volume": "p/v", "size": "20G"}]).disks[0].size == 20 * 1024**3
    assert make(disks=[{"volume": "p/v", "size": 4096}]).disks[0].size == 4096
    assert make(disks=[{"volume": "p/v", "size": vmdef.MAX_DISK_BYTES}]).disks[0].size == vmdef.MAX_DISK_BYTES
    refused("size", disks=[{"volume": "p/v", "size": vmdef.MAX_DISK_BYTES + 1}])
    refused("size", disks=[{"volume": "p/v", "size": 0}])
    refused("size", disks=[{"volume": "p/v", "size": "lots"}])


def test_nics():
    nic = make(nics=[{"network": 100, "mac": "52-54-00-AB-CD-EF"}]).nics[0]
    assert (nic.network, nic.mac, nic.model) == (100, "52:54:00:ab:cd:ef", "virtio")
    assert make(nics=[{"network": MAX_VNI}]).nics[0].network == MAX_VNI
    refused("network", nics=[{"network": 0}])
    refused("network", nics=[{"network": MAX_VNI + 1}])
    refused("multicast", nics=[{"network": 1, "mac": "01:00:5e:00:00:01"}])
    refused("multicast", nics=[{"network": 1, "mac": "ff:ff:ff:ff:ff:ff"}])
    refused("not a usable MAC", nics=[{"network": 1, "mac": "00:00:00:00:00:00"}])
    refused("not a MAC address", nics=[{"network": 1, "mac": "52:54:00:00:00"}])
    refused("model", nics=[{"network": 1, "model": "vmxnet3"}])


def test_graphics_machine_firmware_clock():
    assert make(graphics="spice", machine="pc", firmware="uefi", clock="localtime").graphics == "spice"
    refused("graphics", graphics="sdl")
    refused("machine", machine="isapc")
    refused("firmware", firmware="coreboot")
    refused("clock", clock="variable")


def test_placement_and_migration():
    d = make(
        placement={"node_limit": ["n1", "n2"], "selector": "memprov", "autostart": True},
        migration={"method": "live-only", "max_downtime_ms": 500, "timeout_s": 600},
    )
    assert d.placement.selector == "memprov" and d.migration.timeout_s == 600
    refused("selector", placement={"selector": "random"})
    refused("method", migration={"method": "teleport"})
    refused("max_downtime_ms", migration={"max_downtime_ms": 0})
    refused("max_downtime_ms", migration={"max_downtime_ms": vmdef.MAX_DOWNTIME_MS + 1})
    refused("timeout_s", migration={"timeout_s": 0})
    refused("timeout_s", migration={"timeout_s": vmdef.MAX_MIGRATION_TIMEOUT_S + 1})


def test_definitions_are_immutable_and_json_round_trips():
    d = make(disks=[{"volume": "p/v", "size": "1G"}], nics=[{"network": 3, "mac": "52:54:00:00:00:03"}])
    with pytest.raises(ValidationError):
        d.vcpus = 4  # type: ignore[misc]
    assert VmDefinition.model_validate_json(d.model_dump_json()) == d


def test_changed_validates_the_result():
    d = make(vcpus=2, topology={"cores": 2})
    assert d.changed(vcpus=4, topology=None).vcpus == 4
    assert d.changed(memory_mib=2048).memory_mib == 2048 and d.memory_mib == 1024
    with pytest.raises(ValidationError, match="but vcpus is 4"):
        d.changed(vcpus=4)
    with pytest.raises(ValidationError, match="memory_mib"):
        d.changed(memory_mib=1)


def test_nic_and_disk_helpers():
    d = make()
    d = d.with_nic(Nic(network=100, mac="52:54:00:00:00:01")).with_nic(Nic(network=200))
    assert d.networks == [100, 200]
    d = d.without_nic("52-54-00-00-00-01")
    assert [n.network for n in d.nics] == [200]
    with pytest.raises(KeyError, match="no NIC with MAC"):
        d.without_nic("52:54:00:00:00:09")
    with pytest.raises(ValidationError, match="MAC address"):
        d.with_nic(Nic(network=1, mac="52:54:00:00:00:02")).with_nic(Nic(network=2, mac="52:54:00:00:00:02"))
    d = d.with_disk(Disk.model_validate({"volume": "vms/root", "size": "10G"})).with_disk(
        Disk(volume="vms/seed", device="cdrom")
    )
    assert d.volumes == ["vms/root", "vms/seed"]
    assert d.without_disk("vms/seed").volumes == ["vms/root"]
    with pytest.raises(KeyError, match="no disk on volume"):
        d.without_disk("vms/other")
    with pytest.raises(ValidationError, match="given twice"):
        d.with_disk(Disk(volume="vms/root"))
    full = make(nics=[{"network": i + 1} for i in range(vmdef.MAX_NICS)])
    with pytest.raises(ValidationError, match="at most"):
        full.with_nic(Nic(network=1))
