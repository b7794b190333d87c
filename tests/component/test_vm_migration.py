"""Schema 2 → 3 on a real ZooKeeper: a tree written the way version 2 wrote it (VM records holding domain XML and
metadata, the name index), with good and hostile VMs, becomes typed VM definitions with nothing dropped."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from pvc.config.secrets import vm_mac_prefix
from pvc.nodeos.state import actions, layout
from pvc.nodeos.state.migrations import ensure_schema, index_vm_names
from pvc.nodeos.state.models import Keepalive, NodeRecord, VmName, VmStatus
from pvc.nodeos.state.store import Conflict
from pvc.nodeos.state.vmstate import TransitionError
from tests.harness.cluster import JOIN_KEY, tiny_vm

PREFIX = vm_mac_prefix(JOIN_KEY)


def old_xml(name: str, vm_uuid: str, devices: str = "", top: str = "") -> str:
    """A domain XML as version 2's tests and users wrote them (what `pvc vm define file.xml` stored as is)."""
    return (
        f"<domain type='kvm'><name>{name}</name><uuid>{vm_uuid}</uuid><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
        "<os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/></os>"
        "<cpu mode='host-passthrough' migratable='on'><feature policy='disable' name='arch-capabilities'/></cpu>"
        f"{top}<on_poweroff>destroy</on_poweroff><devices><emulator>/usr/bin/qemu-system-x86_64</emulator>"
        f"{devices}<serial type='pty'/><console type='pty'/><memballoon model='none'/></devices></domain>"
    )


HOSTILE = {  # the security review's C1 classes, two per VM
    "evil-files": (
        "<disk type='file' device='disk'><source file='/etc/shadow'/><target dev='vdb'/></disk>"
        "<hostdev mode='subsystem' type='pci'><source><address bus='0x01' slot='0x00'/></source></hostdev>",
        ["devices/disk/source/@file", "devices/hostdev"],
    ),
    "evil-root": (
        "<filesystem type='mount' accessmode='passthrough'><source dir='/'/><target dir='root'/></filesystem>"
        "<serial type='file'><source path='/etc/evil'/></serial>",
        ["devices/filesystem", "devices/serial[1]/@type"],
    ),
}


def write_v2_vm(state, name: str, xml: str, vm_state: str = "stop", running: bool = False, **meta) -> str:
    vm_uuid = str(uuid.uuid4())
    record = {
        "uuid": vm_uuid,
        "name": name,
        "xml": xml.replace("UUID", vm_uuid),
        "state": vm_state,
        "node": "n1",
        "last_node": None,
        "memory_mib": 64,
        "vcpus": 1,
        "meta": {
            "node_limit": [],
            "selector": None,
            "autostart": False,
            "migration_method": None,
            "max_downtime_ms": None,
            "tags": [],
            **meta,
        },
        "task": None,
        "created": time.time(),
        "updated": time.time(),
    }
    status = VmStatus(state="running" if running else "stopped", node="n1" if running else None)
    state.zk.create(layout.vm(vm_uuid), json.dumps(record).encode())
    state.zk.create(layout.vm_status(vm_uuid), status.model_dump_json().encode())
    state.zk.create(layout.vm_console(vm_uuid), b'{"lines": ["boot"]}')
    state.zk.create(layout.vm_name(name), VmName(uuid=vm_uuid).model_dump_json().encode())
    return vm_uuid


@pytest.fixture
def v2_tree(state):
    assert ensure_schema(state, JOIN_KEY, migrations={1: index_vm_names}, target=2) == 2
    nic = "<interface type='bridge'><source bridge='vmbr100'/><model type='virtio'/></interface>"
    disk = (
        "<disk type='network' device='disk'><driver name='qemu' type='raw' cache='none'/>"
        "<source protocol='rbd' name='vms/web-disk'/><target dev='vda' bus='virtio'/></disk>"
    )
    uuids = {
        "web": write_v2_vm(
            state,
            "web",
            old_xml("web", "UUID", devices=disk + nic),
            tags=["web", "blue"],
            node_limit=["n1", "n2"],
            migration_method="live-only",
            max_downtime_ms=250,
            autostart=True,
        ),
        "plain": write_v2_vm(state, "plain", old_xml("plain", "UUID"), vm_state="start", running=True),
    }
    for name, (fragment, _) in HOSTILE.items():
        uuids[name] = write_v2_vm(
            state, name, old_xml(name, "UUID", devices=fragment), vm_state="start", running=name == "evil-files"
        )
    return uuids


def test_good_vms_get_definitions_with_their_metadata_and_macs(state, v2_tree):
    assert ensure_schema(state, JOIN_KEY) == layout.SCHEMA_VERSION == 3
    web = state.find_vm("web")
    d = web.definition
    assert d is not None and (d.name, d.uuid, d.memory_mib, d.machine) == ("web", v2_tree["web"], 64, "pc")
    assert d.volumes == ["vms/web-disk"] and [n.network for n in d.nics] == [100]
    assert d.tags == ["web", "blue"] and d.placement.node_limit == ["n1", "n2"] and d.placement.autostart
    assert (d.migration.method, d.migration.max_downtime_ms) == ("live-only", 250)
    mac = d.nics[0].mac
    assert mac is not None and mac.startswith(PREFIX + ":"), mac  # generated in the cluster's prefix
    assert state.mac_holder(mac) == web.uuid
    raw, _ = state.vm_record(web.uuid)
    assert "xml" not in raw and "meta" not in raw and raw["definition"]["name"] == "web"
    plain = state.find_vm("plain")
    assert plain.definition is not None and plain.state == "start" and plain.original_xml is None
    for vm_uuid in (web.uuid, plain.uuid):
        assert state.console(vm_uuid) == ["boot"]
    assert state.vm_status(plain.uuid).state == "running"
    assert not [f for f in state.faults() if f.id in {f"vm-refused-{u}" for u in (web.uuid, plain.uuid)}]


def test_refused_vms_keep_their_record_and_xml_cannot_start_and_raise_a_fault(state, v2_tree):
    before = {n: state.vm_record(u)[0] for n, u in v2_tree.items()}
    ensure_schema(state, JOIN_KEY)
    faults = {f.id: f for f in state.faults()}
    for name, (_, paths) in HOSTILE.items():
        spec = state.find_vm(name)
        assert spec.uuid == v2_tree[name] and spec.definition is None
        assert spec.original_xml == before[name]["xml"], "the XML is kept for the administrator"
        refused = [r.path for r in spec.refused]
        assert all(p in refused for p in paths), refused
        assert spec.state == "start" and spec.node == "n1"  # a running one is left as it is
        fault = faults[f"vm-refused-{spec.uuid}"]
        assert f"VM '{name}' ({spec.uuid})" in fault.message and all(p in fault.message for p in paths)
        with pytest.raises(TransitionError, match="has no definition"):
            actions.change_state(state, name, "restart")
    assert state.vm_status(v2_tree["evil-files"]).state == "running"
    assert state.console(v2_tree["evil-root"]) == ["boot"]


def test_the_migration_runs_again_harmlessly(state, v2_tree):
    ensure_schema(state, JOIN_KEY)
    after = {n: state.vm_record(u)[0] for n, u in v2_tree.items()}
    state.set_schema_version(2)  # as if a node died before recording the new version
    assert ensure_schema(state, JOIN_KEY) == 3
    assert {n: state.vm_record(u)[0] for n, u in v2_tree.items()} == after


def test_redefining_or_modifying_a_refused_vm_clears_it(state, v2_tree):
    ensure_schema(state, JOIN_KEY)
    for name in ("n1", "n2"):
        state.put_node(NodeRecord(name=name, coordinator=True, daemon_state="run"))
        state.write_keepalive(name, Keepalive(mem_total=8192, mem_free=4096))
    files, root = v2_tree["evil-files"], v2_tree["evil-root"]
    redefined = actions.define_vm(state, tiny_vm("evil-files"), mac_prefix=PREFIX)
    assert redefined.uuid == files and redefined.definition is not None and redefined.refused == []
    assert state.find_vm("evil-files").original_xml is None
    modified = actions.modify_vm(state, root, tiny_vm("evil-root", root), mac_prefix=PREFIX)
    assert modified.definition is not None and modified.definition.uuid == root
    assert not {f"vm-refused-{files}", f"vm-refused-{root}"} & {f.id for f in state.faults()}
    with pytest.raises(Conflict, match="already exists"):
        actions.define_vm(state, tiny_vm("evil-files"), mac_prefix=PREFIX)  # it has a definition now
