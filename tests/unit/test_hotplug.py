"""What a node changes live in a running VM and what waits for its next start (nodeos/daemon/hotplug.py), and the
one NIC's XML that pvcd hot-plugs (vmrender.interface_xml)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from pvc.nodeos.daemon import hotplug
from pvc.nodeos.daemon.hotplug import LiveNic
from pvc.nodeos.state.vmdef import Disk, Nic, VmDefinition
from pvc.nodeos.state.vmimport import import_xml
from pvc.nodeos.state.vmrender import Host, disk_xml, interface_xml, render

HOST = Host("tcg", (("192.0.2.11", 6789),), "0b7a5c52-7f0c-4c38-9d44-3c4d2c1e9a01", "/var/lib/pvc/console/x.log")
A, B, C = "52:54:00:00:00:0a", "52:54:00:00:00:0b", "52:54:00:00:00:0c"


def vm(**fields: object) -> VmDefinition:
    base: dict[str, object] = {"name": "web", "uuid": "c0ffee00-0000-4000-8000-00000000000a", "memory_mib": 256}
    return VmDefinition.model_validate({**base, **fields})


def test_interface_xml_is_the_nic_as_render_writes_it():
    nic = Nic(network=100, mac=A, model="e1000e")
    el = ET.fromstring(interface_xml(nic))
    assert (el.tag, el.get("type")) == ("interface", "bridge")
    assert el.find("mac").get("address") == A and el.find("source").get("bridge") == "vmbr100"
    assert el.find("model").get("type") == "e1000e"
    rendered = ET.fromstring(render(vm(nics=[nic.model_dump()]), HOST)).find("devices/interface")
    assert rendered is not None
    same = [ET.canonicalize(ET.tostring(x, encoding="unicode"), strip_text=True) for x in (rendered, el)]
    assert same[0] == same[1]


def test_live_nics_read_a_domains_interfaces():
    xml = render(vm(nics=[{"network": 100, "mac": A}, {"network": 7, "mac": B, "model": "rtl8139"}]), HOST)
    assert hotplug.live_nics(xml) == [LiveNic(A, "vmbr100", "virtio"), LiveNic(B, "vmbr7", "rtl8139")]
    assert [n.network for n in hotplug.live_nics(xml)] == [100, 7]
    assert LiveNic(C, "virbr0", "virtio").network is None


def test_nic_plan_attaches_detaches_moves_and_defers_a_new_model():
    live = [LiveNic(A, "vmbr100", "virtio"), LiveNic(B, "vmbr100", "virtio"), LiveNic(C, "vmbr100", "virtio")]
    wanted = [
        Nic(network=100, mac=A),  # as it runs
        Nic(network=200, mac=B),  # another network: a new bridge, live
        Nic(network=100, mac="52:54:00:00:00:0d", model="e1000e"),  # new: plugged in
        Nic(network=100, mac=C, model="e1000e"),  # another model: at the next start
    ]
    plan = hotplug.nic_plan(live, wanted)
    assert [n.mac for n in plan.attach] == ["52:54:00:00:00:0d"]
    assert [(n.mac, n.network) for n in plan.move] == [(B, 200)]
    assert plan.detach == []
    assert plan.pending == [f"NIC {C}: model virtio -> e1000e (at the next start)"]
    gone = hotplug.nic_plan(live, [Nic(network=100, mac=A)])
    assert [n.mac for n in gone.detach] == [B, C] and not gone.attach and not gone.move and not gone.empty
    assert hotplug.nic_plan(live[:1], [Nic(network=100, mac=A)]).empty


def test_pending_fields_are_the_hardware_changes_only():
    running = vm(vcpus=1, nics=[{"network": 100, "mac": A}], tags=["a"])
    wanted = running.changed(
        vcpus=2, memory_mib=512, tags=["b"], placement={"autostart": True}, description="x", nics=[], rng=False
    )
    assert hotplug.pending_fields(running, wanted) == [
        "vcpus: 1 -> 2 (at the next start)",
        "memory_mib: 256 -> 512 (at the next start)",
        "rng: True -> False (at the next start)",
    ]
    disk = running.with_disk(
        running.model_validate({"name": "x", "memory_mib": 16, "disks": [{"volume": "p/v"}]}).disks[0]
    )
    assert hotplug.pending_fields(running, disk) == ["disks: [] -> [p/v] (at the next start)"]
    assert hotplug.pending_fields(running, running) == []


def test_a_rendered_domain_compares_equal_to_its_definition():
    d = vm(machine="q35", nics=[{"network": 100, "mac": A}], disks=[{"volume": "vms/root", "size": "2G"}])
    assert hotplug.pending_fields(import_xml(render(d, HOST)), d) == []


def test_detach_xml_names_the_nic_by_its_mac():
    el = ET.fromstring(hotplug.detach_xml(LiveNic(A, "vmbr100", "virtio")))
    assert el.find("mac").get("address") == A and el.find("source").get("bridge") == "vmbr100"


def test_disk_plan_attaches_on_free_targets_and_detaches_by_the_live_element():
    running = vm(disks=[{"volume": "vms/a"}, {"volume": "vms/b"}, {"volume": "vms/c", "bus": "sata"}])
    xml = render(running, HOST)
    # b goes, d (virtio) and e (scsi) come: d takes vdb, the target b frees only once it is gone; e needs a
    # virtio-scsi controller, which the domain has not
    wanted = vm(disks=[{"volume": "vms/a"}, {"volume": "vms/c", "bus": "sata"}, {"volume": "vms/d"},
                       {"volume": "vms/e", "bus": "scsi"}]).disks  # fmt: skip
    plan = hotplug.disk_plan(xml, wanted)
    assert [(d.volume, t) for d, t in plan.attach] == [("vms/d", "vdc"), ("vms/e", "sdb")]
    assert [(x.volume, x.target) for x in plan.detach] == [("vms/b", "vdb")]
    assert ET.fromstring(plan.detach[0].xml).find("target").get("dev") == "vdb"
    assert plan.scsi_controller
    assert hotplug.disk_plan(xml, running.disks).empty
    attach = ET.fromstring(disk_xml(plan.attach[0][0], "vdc", HOST))
    assert attach.find("source").get("name") == "vms/d" and attach.find("target").get("dev") == "vdc"
    assert attach.find("auth/secret").get("uuid") == HOST.ceph_secret_uuid


def test_running_definition_forgets_an_unplugged_disk_and_libvirts_indexes_and_lists_a_plugged_one_last():
    started = vm(disks=[{"volume": "vms/a", "size": 1024}, {"volume": "vms/b"}])
    root = ET.fromstring(render(started, HOST))
    devices = root.find("devices")
    devices.remove(devices.findall("disk")[1])  # unplugged: PVC's metadata still lists it
    devices.insert(1, ET.fromstring(disk_xml(Disk(volume="vms/c"), "vdc", HOST)))  # plugged in
    for source in devices.iterfind("disk/source"):
        source.set("index", "1")  # libvirt's block node, on every disk of a running domain
    back = hotplug.running_definition(ET.tostring(root, encoding="unicode"))
    assert back.volumes == ["vms/a", "vms/c"] and back.disks[0].size == 1024
    assert hotplug.pending_fields(back, vm(disks=[{"volume": "vms/a", "size": 1024}, {"volume": "vms/c"}])) == []
