"""pvcd on three simulated servers (real ZooKeeper, libvirtd, QEMU, IPMI): lifecycle, migration, flush/ready,
primary failover, fencing after power loss and after a network partition. Every test ends with the double-run
checker's verdict (conftest.runtime)."""

from __future__ import annotations

import json
import time

import pytest

from pvc.config.secrets import vm_mac_prefix
from pvc.nodeos.daemon import hotplug
from pvc.nodeos.state import actions, layout
from pvc.nodeos.state.models import Refusal
from pvc.nodeos.state.store import NotFound
from pvc.nodeos.state.vmdef import Nic
from pvc.nodeos.state.vmstate import TransitionError
from tests.harness.api import ensure_network
from tests.harness.cluster import JOIN_KEY, tiny_vm
from tests.harness.procs import wait_until


def test_lifecycle(runtime):
    spec = runtime.define("life1")
    assert runtime.state.vm(spec.uuid).state == "stop" and runtime.where(spec.uuid) == []
    actions.change_state(runtime.state, "life1", "start")
    runtime.wait_running(spec, "n1")
    with pytest.raises(TransitionError):
        actions.change_state(runtime.state, "life1", "start")
    actions.change_state(runtime.state, "life1", "restart")
    wait_until("restart hands back to start", lambda: runtime.state.vm(spec.uuid).state == "start", 60)
    runtime.wait_running(spec, "n1")
    actions.change_state(runtime.state, "life1", "shutdown")  # no guest OS: destroyed after the timeout
    wait_until("shutdown ends in stop", lambda: runtime.state.vm(spec.uuid).state == "stop", 60)
    runtime.wait_stopped(spec)
    actions.change_state(runtime.state, "life1", "start")
    runtime.wait_running(spec, "n1")
    actions.change_state(runtime.state, "life1", "stop")
    runtime.wait_stopped(spec)
    actions.change_state(runtime.state, "life1", "disable")
    with pytest.raises(TransitionError):
        actions.change_state(runtime.state, "life1", "restart")
    actions.remove_vm(runtime.state, "life1")
    assert runtime.state.vms() == []


def test_what_pvcd_starts_is_checked_and_a_vm_without_a_definition_never_starts(runtime):
    spec = runtime.define("unchecked")
    actions.change_state(runtime.state, "unchecked", "start")
    runtime.wait_running(spec, "n1")
    live = runtime.domain_xml("n1", spec.uuid)
    assert "<bios useserial='yes'/>" in live and "/usr/bin/qemu-system-x86_64" in live  # what vmrender made
    # the schema 3 migration leaves a VM whose XML was refused like this: it keeps running, it is not started again
    refusal = [Refusal(path="devices/disk/source/@file", message="host file disks are not allowed")]
    refused = {"definition": None, "original_xml": "<domain/>", "refused": refusal}
    runtime.state.update_vm(spec.uuid, lambda s: s.model_copy(update=refused))
    time.sleep(3)  # three periodic passes
    assert runtime.where(spec.uuid) == ["n1"] and runtime.state.vm_status(spec.uuid).state == "running"
    with pytest.raises(TransitionError, match="has no definition"):
        actions.change_state(runtime.state, "unchecked", "restart")
    actions.change_state(runtime.state, "unchecked", "stop")
    runtime.wait_stopped(spec)
    runtime.state.update_vm(spec.uuid, lambda s: s.model_copy(update={"state": "start"}))  # behind the API's back

    def refused_start() -> str | None:
        status = runtime.state.vm_status(spec.uuid)
        return status.reason if status.state == "failed" else None

    reason = wait_until("pvcd to refuse the start", refused_start, 30, interval=0.2)
    assert reason == (
        "refused: it has no definition (devices/disk/source/@file: host file disks are not allowed): "
        "define it again or modify it"
    )
    wait_until("the start handed off to fail", lambda: runtime.state.vm(spec.uuid).state == "fail", 10, 0.1)
    assert runtime.where(spec.uuid) == []
    # a definition written into ZooKeeper by other means is checked as API input is, before libvirt sees anything
    raw, _ = runtime.state.vm_record(spec.uuid)
    bad = {**tiny_vm("unchecked", spec.uuid).model_dump(mode="json"), "memory_mib": 1}
    runtime.state.zk.set(layout.vm(spec.uuid), json.dumps({**raw, "state": "start", "definition": bad}).encode())

    def refused_bad() -> str | None:
        reason = refused_start()
        return reason if reason and "memory_mib" in reason else None

    reason = wait_until("pvcd to refuse the bad definition", refused_bad, 30, 0.2)
    assert reason.startswith("refused: it has no definition (memory_mib: Input should be greater than or equal to 16")
    assert runtime.where(spec.uuid) == []


def test_crashed_vm_is_restarted(runtime):
    spec = runtime.define("crashy")
    actions.change_state(runtime.state, "crashy", "start")
    runtime.wait_running(spec, "n1")
    import libvirt

    conn = libvirt.open(runtime.libvirt_uri("n1"))
    conn.lookupByUUIDString(spec.uuid).destroy()  # behind pvcd's back
    conn.close()
    runtime.wait_running(spec, "n1")


def test_live_migrate_move_unmigrate(runtime):
    spec = runtime.define("mover")
    actions.change_state(runtime.state, "mover", "start")
    runtime.wait_running(spec, "n1")
    _, task = actions.move_vm(runtime.state, "mover", "migrate", target="n2")
    wait_until("migration task done", lambda: runtime.state.task(task.id).state == "succeeded", 60)
    assert "live-migrated to n2" in runtime.state.task(task.id).message
    assert runtime.state.vm(spec.uuid).state == "start"
    runtime.wait_running(spec, "n2")
    assert runtime.state.vm(spec.uuid).last_node == "n1"
    actions.move_vm(runtime.state, "mover", "unmigrate")
    wait_until("unmigrate done", lambda: runtime.state.vm(spec.uuid).state == "start", 60)
    runtime.wait_running(spec, "n1")
    assert runtime.state.vm(spec.uuid).last_node is None
    actions.move_vm(runtime.state, "mover", "move", target="n3")
    wait_until("move done", lambda: runtime.state.vm(spec.uuid).state == "start", 60)
    runtime.wait_running(spec, "n3")
    assert runtime.state.vm(spec.uuid).last_node is None
    actions.change_state(runtime.state, "mover", "stop")
    wait_until("stopped", lambda: runtime.where(spec.uuid) == [], 30)
    spec2, task = actions.move_vm(runtime.state, "mover", "move", target="n1")  # not running: only the home changes
    assert spec2.state == "stop" and spec2.node == "n1" and task.state == "succeeded"


def bridges_of(cluster, node: str, vm_uuid: str) -> dict[str, str]:
    """MAC -> bridge of the domain's interfaces, as libvirt on `node` has them live."""
    return {n.mac: n.bridge for n in hotplug.live_nics(cluster.domain_xml(node, vm_uuid))}


def test_nics_are_hot_plugged_and_a_vm_on_a_missing_network_does_not_start(runtime):
    state = runtime.state
    for vni in (100, 101):
        ensure_network(state, vni)
    spec = runtime.define("nicky", nics=[{"network": 100}])
    first = spec.definition.nics[0].mac
    # a network removed behind the API's back (the API refuses while a VM uses it): pvcd refuses the start
    state.remove_network(100)
    actions.change_state(state, "nicky", "start")

    def refused() -> str | None:
        status = state.vm_status(spec.uuid)
        return status.reason if status.state == "failed" else None

    reason = wait_until("pvcd to refuse the start", refused, 30, interval=0.2)
    assert reason == (
        f"refused: its NIC {first} is on network 100, which does not exist: create the network (pvc network add) "
        "or remove the NIC (pvc vm network remove nicky 100)"
    )
    assert runtime.where(spec.uuid) == []
    ensure_network(state, 100)
    actions.change_state(state, "nicky", "start")
    runtime.wait_running(spec, "n1")
    assert bridges_of(runtime, "n1", spec.uuid) == {first: "vmbr100"}

    # a NIC added to the running VM is plugged in, and the VM's status shows it
    _, added = actions.add_nic(state, "nicky", Nic(network=101), mac_prefix=vm_mac_prefix(JOIN_KEY))
    wait_until("the new NIC plugged in", lambda: added.mac in state.vm_status(spec.uuid).nics, 30, interval=0.2)
    assert bridges_of(runtime, "n1", spec.uuid) == {first: "vmbr100", added.mac: "vmbr101"}
    assert state.vm_status(spec.uuid).pending == []

    # a NIC moved to another network gets its new bridge live; a new model and more memory wait for the next start
    d = state.find_vm("nicky").definition
    moved = d.changed(memory_mib=96, nics=[{**d.nics[0].model_dump(), "network": 101}, d.nics[1].model_dump()])
    actions.modify_vm(state, "nicky", moved, mac_prefix=vm_mac_prefix(JOIN_KEY))
    wait_until("the NIC on its new bridge", lambda: bridges_of(runtime, "n1", spec.uuid)[first] == "vmbr101", 30, 0.2)
    pending = wait_until("the pending change", lambda: state.vm_status(spec.uuid).pending, 30, interval=0.2)
    assert pending == ["memory_mib: 64 -> 96 (at the next start)"], pending
    d = state.find_vm("nicky").definition
    remodel = d.changed(nics=[d.nics[0].model_dump(), {**d.nics[1].model_dump(), "model": "e1000e"}])
    actions.modify_vm(state, "nicky", remodel, mac_prefix=vm_mac_prefix(JOIN_KEY))
    wait_until(
        "the model change pending",
        lambda: f"NIC {added.mac}: model virtio -> e1000e (at the next start)" in state.vm_status(spec.uuid).pending,
        30,
        interval=0.2,
    )

    # a NIC removed from the definition is unplugged; a guest that never releases it (no OS here) keeps it until the
    # next start, and the status says so
    actions.remove_nic(state, "nicky", 101, mac=added.mac)

    def unplugged_or_waiting() -> bool:
        status = state.vm_status(spec.uuid)
        if added.mac in status.nics:
            return any(added.mac in line and "waiting for the guest" in line for line in status.pending)
        return added.mac not in bridges_of(runtime, "n1", spec.uuid)

    wait_until("the NIC unplugged, or its release awaited", unplugged_or_waiting, 30, interval=0.2)
    assert [n.mac for n in state.find_vm("nicky").definition.nics] == [first]
    with pytest.raises(NotFound):
        actions.remove_nic(state, "nicky", 101, mac=added.mac)

    # the next start applies everything: one NIC on vmbr101, 96 MiB, nothing pending
    actions.change_state(state, "nicky", "stop")
    runtime.wait_stopped(spec)
    actions.change_state(state, "nicky", "start")
    runtime.wait_running(spec, "n1")
    assert bridges_of(runtime, "n1", spec.uuid) == {first: "vmbr101"}
    assert "<memory unit='KiB'>98304</memory>" in runtime.domain_xml("n1", spec.uuid)
    wait_until("nothing pending", lambda: state.vm_status(spec.uuid).nics == [first], 30, interval=0.2)
    assert state.vm_status(spec.uuid).pending == []


@pytest.mark.parametrize("runtime", [{"fencing": False}], indirect=True)  # the frozen source must not be fenced
def test_target_finishes_a_migration_whose_source_cannot(runtime):
    """The source's pvcd freezes (SIGSTOP) while its libvirtd carries the migration out: the target, where the VM
    arrived, sees the source's keepalive stop, asks the source's libvirtd, which no longer runs it, and writes
    `start` itself, so the VM does not stay in `migrate`. The source node is not dead (its libvirtd answers: a
    fault says its pvcd is stalled), so nothing is fenced."""
    import os
    import signal

    import libvirt

    spec = runtime.define("orphan")
    actions.change_state(runtime.state, "orphan", "start")
    runtime.wait_running(spec, "n1")
    target = libvirt.open(runtime.libvirt_uri("n2"))
    source_pvcd = runtime.pvcd_pid("n1")
    try:
        _, task = actions.move_vm(runtime.state, "orphan", "migrate", target="n2")

        # the incoming domain exists on n2 from the moment n1's libvirtd has begun the migration
        def incoming() -> bool:  # paused until the migration ends: active, not running
            return any(
                d.UUIDString() == spec.uuid for d in target.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)
            )

        wait_until("the incoming domain on n2", incoming, 30, interval=0.01)
        os.kill(source_pvcd, signal.SIGSTOP)
        try:
            wait_until("n2 to write start", lambda: runtime.state.vm(spec.uuid).state == "start", 15)
            runtime.wait_running(spec, "n2")
            assert runtime.state.task(task.id).state == "succeeded"
            wait_until(
                "a fault saying n1's pvcd is stalled",
                lambda: any(f.id == "node-stalled-n1" for f in runtime.state.faults()),
                15,
            )
            assert runtime.state.node("n1").daemon_state == "run" and runtime.state.node("n1").fence is None
        finally:
            os.kill(source_pvcd, signal.SIGCONT)
    finally:
        target.close()
    wait_until("n1 back", lambda: runtime.state.node("n1").daemon_state == "run", 15)
    assert "live-migrated to n2" in runtime.state.task(task.id).message
    runtime.wait_running(spec, "n2")
    assert runtime.state.vm(spec.uuid).last_node == "n1"


def test_live_only_vm_stays_when_live_migration_fails(runtime):
    spec = runtime.define("stubborn", migration={"method": "live-only"})
    actions.change_state(runtime.state, "stubborn", "start")
    runtime.wait_running(spec, "n1")
    runtime.kill_libvirtd("n2")  # n2 stays up, but nothing there can receive the VM
    _, task = actions.move_vm(runtime.state, "stubborn", "migrate", target="n2")
    wait_until("migration task failed", lambda: runtime.state.task(task.id).state == "failed", 60)
    assert "live-only" in runtime.state.task(task.id).message
    wait_until("a libvirt-down fault", lambda: any(f.kind == "libvirt-down" for f in runtime.state.faults()), 10)
    time.sleep(runtime.cfg.timers.keepalive_interval * (runtime.cfg.timers.dead_after + 1))
    assert runtime.state.node("n2").daemon_state == "run", "a node whose libvirtd died is not dead"
    final = runtime.state.vm(spec.uuid)
    assert final.node == "n1" and final.state == "start"
    runtime.wait_running(spec, "n1")


def test_a_hung_libvirtd_does_not_get_its_node_fenced(runtime):
    """A libvirtd that stops answering (SIGSTOP: every call hangs, as while it waits for a QEMU to start or for
    storage) must not delay its node's keepalive: the node stays up, a fault says libvirt is not answering, and
    nothing moves. (On a node other than the primary: the primary's fencer is what would act.)"""
    import os
    import signal

    node = next(n for n in runtime.nodes if n != runtime.state.primary())
    spec = runtime.define("patient", node=node)
    actions.change_state(runtime.state, "patient", "start")
    runtime.wait_running(spec, node)
    pid = int((runtime.libvirt_root(node) / "libvirtd.pid").read_text())
    timers = runtime.cfg.timers
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(timers.keepalive_interval * (timers.dead_after + 2))
        record = runtime.state.node(node)
        assert record.daemon_state == "run" and record.fence is None, record
        assert runtime.state.vm(spec.uuid).node == node
        wait_until(
            f"a fault saying {node}'s libvirt does not answer",
            lambda: any(f.id == f"libvirt-{node}" and "not answered" in f.message for f in runtime.state.faults()),
            timers.keepalive_interval * 3,
        )
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until("the fault cleared", lambda: all(f.id != f"libvirt-{node}" for f in runtime.state.faults()), 10)
    runtime.wait_running(spec, node)
    assert runtime.state.node(node).daemon_state == "run"


def test_target_without_room_is_refused(runtime):
    from pvc.nodeos.state.placement import NoTarget

    spec = runtime.define("small")
    with pytest.raises(NoTarget, match="MiB free"):
        runtime.state.update_vm(spec.uuid, lambda s: s.with_definition(s.definition.changed(memory_mib=2**22)))
        actions.move_vm(runtime.state, "small", "migrate", target="n2")


def test_flush_and_ready(runtime):
    specs = [runtime.define(f"fl{i}") for i in range(3)]
    for s in specs:
        actions.change_state(runtime.state, s.name, "start")
    for s in specs:
        runtime.wait_running(s, "n1")
    task = actions.flush_node(runtime.state, "n1")
    wait_until("the flush task", lambda: runtime.state.task(task.id).state == "succeeded", 120)
    assert runtime.state.node("n1").domain_state == "flushed" and runtime.state.task(task.id).progress == 3
    for s in specs:
        where = runtime.where(s.uuid)
        assert len(where) == 1 and where[0] in ("n2", "n3")
        assert runtime.state.vm(s.uuid).last_node == "n1"
    task = actions.ready_node(runtime.state, "n1")
    wait_until("the ready task", lambda: runtime.state.task(task.id).state == "succeeded", 120)
    assert runtime.state.node("n1").domain_state == "ready"
    for s in specs:
        runtime.wait_running(s, "n1")


def test_primary_failover(runtime):
    old = runtime.state.primary()
    assert runtime.lab.addresses(old, "eth1").count("192.0.2.250") == 1
    t0 = time.monotonic()
    runtime.power_loss(old)
    wait_until("a new primary", lambda: runtime.state.primary() not in (None, old), 30, interval=0.1)
    new = runtime.state.primary()
    elapsed = time.monotonic() - t0
    wait_until("floating IP on the new primary", lambda: "192.0.2.250" in runtime.lab.addresses(new, "eth1"), 10)
    assert elapsed < 15, f"failover took {elapsed:.1f}s"


@pytest.mark.parametrize("how", ["power_loss", "partition"])
def test_dead_node_is_fenced_and_its_vms_restart_elsewhere(runtime, how):
    spec_a = runtime.define("ha-a", node="n3")
    spec_b = runtime.define("ha-b", node="n3")
    for s in (spec_a, spec_b):
        actions.change_state(runtime.state, s.name, "start")
        runtime.wait_running(s, "n3")
    if how == "power_loss":
        runtime.power_loss("n3")
    else:
        runtime.lab.set_link("n3", up=False)
    wait_until("n3 fenced", lambda: runtime.state.node("n3").daemon_state == "fenced", 60, interval=0.2)
    for s in (spec_a, spec_b):

        def elsewhere(uuid: str = s.uuid) -> bool:
            return len(runtime.where(uuid)) == 1 and runtime.where(uuid)[0] in ("n1", "n2")

        wait_until(f"{s.name} running on another node", elsewhere, 60)
        assert runtime.state.vm(s.uuid).last_node == "n3"
    assert runtime.state.node("n3").fence.state == "off"
    if how == "partition":
        runtime.lab.set_link("n3", up=True)
    # the BMC powered n3 back on: it rejoins flushed and does not start the VMs that now run elsewhere
    wait_until("n3 back", lambda: runtime.state.node("n3").daemon_state == "run", 60)
    assert runtime.state.node("n3").domain_state == "flushed"
    time.sleep(3)
    for s in (spec_a, spec_b):
        assert "n3" not in runtime.where(s.uuid)
