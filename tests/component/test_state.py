"""The cluster state layer against a real ZooKeeper."""

from __future__ import annotations

import contextlib
import os
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal

import pytest
from kazoo.exceptions import NoAuthError

from pvc.nodeos.state import layout
from pvc.nodeos.state.clock import ZkClock
from pvc.nodeos.state.migrations import SchemaTooNew, ensure_schema, index_vm_names
from pvc.nodeos.state.models import Keepalive, NodeRecord, VmSpec, VmStatus
from pvc.nodeos.state.store import CONSOLE_BYTES, LOG_LINES, ClusterState, Conflict, MacTaken, NotFound, make_client
from tests.harness.cluster import JOIN_KEY, tiny_vm
from tests.harness.procs import wait_until


def spec(name: str = "vm1", node: str = "n1", **fields: Any) -> VmSpec:
    vm_uuid = str(uuid.uuid4())
    return VmSpec(uuid=vm_uuid, name=name, definition=tiny_vm(name, vm_uuid, **fields), node=node)


def test_schema_created_then_migrated_then_too_new(state):
    assert ensure_schema(state, JOIN_KEY) == layout.SCHEMA_VERSION
    calls = []
    migrations = {layout.SCHEMA_VERSION: lambda st, key: calls.append(("up", key))}
    assert ensure_schema(state, JOIN_KEY, migrations, target=layout.SCHEMA_VERSION + 1) == layout.SCHEMA_VERSION + 1
    assert calls == [("up", JOIN_KEY)] and state.schema_version() == layout.SCHEMA_VERSION + 1
    with pytest.raises(SchemaTooNew, match="upgrade this node"):
        ensure_schema(state, JOIN_KEY)


def test_define_is_one_transaction_and_names_are_unique(state):
    a = spec("web")
    state.define_vm(a)
    assert state.vm(a.uuid).name == "web"
    assert state.vm_status(a.uuid).state == "stopped"
    assert state.children(layout.vm(a.uuid)) == ["console", "status"]
    with pytest.raises(Conflict, match="named 'web'"):
        state.define_vm(spec("web"))
    with pytest.raises(Conflict, match="UUID"):
        state.define_vm(a.model_copy(update={"name": "other"}))
    assert state.find_vm("web").uuid == a.uuid and state.find_vm(a.uuid).name == "web"
    state.remove_vm(a.uuid)
    assert not state.zk.exists(layout.vm(a.uuid)) and not state.zk.exists(layout.vm_name("web"))
    with pytest.raises(NotFound):
        state.remove_vm(a.uuid)
    with pytest.raises(NotFound):
        state.find_vm("web")
    state.define_vm(spec("web"))  # the name is free again


def test_two_concurrent_defines_of_one_name_exactly_one_wins(state, zookeeper):
    clients = [make_client(zookeeper.hosts + "/state-tests", user="pvc", password="component-test") for _ in "ab"]
    for zk in clients:
        zk.start(timeout=10)
    try:
        states = [ClusterState(zk) for zk in clients]
        for round_ in range(20):
            name = f"race{round_}"
            barrier = threading.Barrier(2)

            def define(st: ClusterState, name: str = name, barrier: threading.Barrier = barrier) -> str:
                candidate = spec(name)
                barrier.wait()
                try:
                    st.define_vm(candidate)
                    return candidate.uuid
                except Conflict as exc:
                    assert f"named '{name}'" in str(exc)
                    return "conflict"

            with ThreadPoolExecutor(2) as pool:
                outcomes = list(pool.map(define, states))
            assert sorted(outcomes).count("conflict") == 1, outcomes
            winner = next(o for o in outcomes if o != "conflict")
            assert state.find_vm(name).uuid == winner
        assert len(state.vm_uuids()) == 20
    finally:
        for zk in clients:
            zk.stop()
            zk.close()


def test_rename_moves_the_name_in_one_transaction(state):
    a, b = spec("old"), spec("taken")
    state.define_vm(a)
    state.define_vm(b)
    with pytest.raises(Conflict, match="named 'taken'"):
        state.rename_vm(a.uuid, "taken")
    renamed = state.rename_vm(a.uuid, "new")
    assert renamed.name == renamed.definition.name == "new" and state.vm(a.uuid) == renamed
    assert state.find_vm("new").uuid == a.uuid
    with pytest.raises(NotFound):
        state.find_vm("old")
    state.define_vm(spec("old"))  # the old name is free
    # only while stopped, checked on the version the rename replaces: a start that came in between is refused
    state.update_vm(a.uuid, lambda s: s.model_copy(update={"state": "start"}))
    with pytest.raises(Conflict, match="is now to start"):
        state.rename_vm(a.uuid, "newer", {"stop", "disable", "fail"})
    assert state.vm(a.uuid).name == "new"
    with pytest.raises(ValueError, match="rename_vm"):
        state.update_vm(a.uuid, lambda s: s.model_copy(update={"name": "sneaky"}))


def test_any_vm_name_is_one_index_entry(state):
    for name in (".", "..", "%2E", "a%b", "ünï"):  # names a definition refuses: a VM left without one may have them
        state.define_vm(VmSpec(uuid=str(uuid.uuid4()), name=name, node="n1"))
    assert sorted(state.find_vm(n).name for n in (".", "..", "%2E", "a%b", "ünï")) == sorted(
        [".", "..", "%2E", "a%b", "ünï"]
    )


def test_a_version_1_tree_is_migrated_to_the_name_index_with_nothing_dropped(state):
    assert ensure_schema(state, JOIN_KEY, migrations={}, target=1) == 1
    first, second, same_name = spec("web"), spec("db"), spec("web")
    same_name = same_name.model_copy(update={"created": first.created + 1})
    for vm in (first, second, same_name):  # as version 1 wrote them: no index
        state.zk.create(layout.vm(vm.uuid), vm.model_dump_json().encode())
        state.zk.create(layout.vm_status(vm.uuid), VmStatus(state="running", node="n1").model_dump_json().encode())
        state.zk.create(layout.vm_console(vm.uuid), b'{"lines": ["boot"]}')
    assert ensure_schema(state, JOIN_KEY, migrations={1: index_vm_names}, target=2) == 2
    assert sorted(state.vm_uuids()) == sorted(v.uuid for v in (first, second, same_name))
    for vm in (first, second, same_name):
        assert state.vm(vm.uuid) == vm and state.vm_status(vm.uuid).state == "running"
        assert state.console(vm.uuid) == ["boot"]
    assert state.find_vm("web").uuid == first.uuid and state.find_vm("db").uuid == second.uuid
    assert state.find_vm(same_name.uuid).name == "web"  # kept, found by its UUID
    assert [f.kind for f in state.faults()] == ["vm-name-duplicate"] and same_name.uuid in state.faults()[0].message
    assert ensure_schema(state, JOIN_KEY, migrations={1: index_vm_names}, target=2) == 2  # nothing left to do


def test_macs_are_unique_in_the_cluster_and_follow_the_vm(state):
    mac, other = "02:00:00:00:00:01", "02:00:00:00:00:02"
    a = spec("a", nics=[{"network": 100, "mac": mac}])
    state.define_vm(a)
    assert state.mac_holder(mac) == a.uuid
    with pytest.raises(MacTaken, match=f"{mac} is already used by VM {a.uuid}"):
        state.define_vm(spec("b", nics=[{"network": 100, "mac": mac}]))
    assert not state.zk.exists(layout.vm_name("b")), "the refused define wrote nothing"
    b = spec("b", nics=[{"network": 100, "mac": other}])
    state.define_vm(b)
    with pytest.raises(MacTaken, match=f"{other} is already used by VM {b.uuid}"):
        state.update_vm(a.uuid, lambda s: s.with_definition(s.definition.changed(nics=[_nic(mac), _nic(other)])))
    assert state.vm(a.uuid).macs == {mac}, "the refused update changed nothing"
    moved = state.update_vm(a.uuid, lambda s: s.with_definition(s.definition.changed(nics=[_nic("02:00:00:00:00:03")])))
    assert moved.macs == {"02:00:00:00:00:03"}
    assert state.mac_holder(mac) is None and state.mac_holder("02:00:00:00:00:03") == a.uuid
    state.define_vm(spec("c", nics=[{"network": 100, "mac": mac}]))  # free again
    state.remove_vm(b.uuid)
    assert state.mac_holder(other) is None


def _nic(mac: str) -> dict[str, object]:
    return {"network": 100, "mac": mac}


def test_compare_and_set_under_concurrent_writers(state):
    a = spec()
    state.define_vm(a)

    def add_tags(prefix: str) -> None:
        for i in range(10):
            state.update_vm(
                a.uuid, lambda s, t=f"{prefix}{i}": s.with_definition(s.definition.changed(tags=[*s.tags, t]))
            )

    with ThreadPoolExecutor(3) as pool:
        for future in [pool.submit(add_tags, p) for p in "abc"]:
            future.result()  # re-raises a writer's exception
    assert len(state.vm(a.uuid).tags) == 30, "a concurrent update was lost"


def test_keepalive_mtime_is_zookeeper_time(state):
    first = state.write_keepalive("n1", Keepalive(mem_total=1024))
    second = state.write_keepalive("n1", Keepalive(mem_total=2048))
    record, mtime = state.keepalive("n1")
    assert record.mem_total == 2048 and mtime == second >= first
    assert state.keepalive("nobody") is None


def test_zookeeper_clock_is_learnt_from_keepalives_without_a_write(state):
    clock = ZkClock(state.zk)
    state.write_keepalive("n1", Keepalive())
    clock.start()
    assert clock.now_ms() is None, "a keepalive of unknown age must not set the clock"
    first = state.write_keepalive("n1", Keepalive())
    assert clock.wait_known(10), "the keepalive's change event never arrived"
    time.sleep(1.0)
    now = clock.now_ms()
    later = state.write_keepalive("n2", Keepalive())  # a node that registered after the clock started
    assert now is not None and first + 500 <= now <= later, (first, now, later)


def test_primary_claim_is_this_sessions_and_taken_over_from_a_stale_one(state, zookeeper):
    other = make_client(zookeeper.hosts + "/state-tests", user="pvc", password="component-test", timeout=5)
    other.start(timeout=10)
    try:
        ClusterState(other).claim_primary("n2")  # a previous primary whose session has not expired yet
        state.claim_primary("n1")
        assert state.primary() == "n1"
        claimed = state.zk.exists(layout.PRIMARY)
        assert claimed.ephemeralOwner == state.zk.client_id[0]
        assert state.claim_primary("n1")  # again, while it holds it: no change
        assert state.zk.exists(layout.PRIMARY).czxid == claimed.czxid
        # a primary that did not notice it was replaced does not take the znode back in its term's loop
        assert ClusterState(other).claim_primary("n2", take_over=False) is False
        assert state.primary() == "n1" and state.is_primary_session()
        assert not ClusterState(other).is_primary_session()
        assert state.stamp_primary("n1") >= claimed.mtime
    finally:
        other.stop()
        other.close()


def test_alive_znode_lives_with_the_session(state, zookeeper):
    other = make_client(zookeeper.hosts + "/state-tests", user="pvc", password="component-test", timeout=5)
    other.start(timeout=10)
    ClusterState(other).mark_alive("n2")
    ClusterState(other).mark_alive("n2")  # idempotent
    assert state.zk.exists(layout.node_alive("n2"))
    other.stop()
    other.close()
    assert not state.zk.exists(layout.node_alive("n2"))


def test_node_log_appends_and_is_bounded(state):
    assert state.node_log("n1") == []
    state.append_node_log("n1", ["one", "two"])
    state.append_node_log("n1", [f"line {i}" for i in range(LOG_LINES)])
    lines = state.node_log("n1")
    assert len(lines) == LOG_LINES and lines[0] == "line 0" and lines[-1] == f"line {LOG_LINES - 1}"


def test_a_finished_task_keeps_its_end(state):
    task = state.create_task("migrate", "vm1", total=1)
    assert state.finish_task(task.id, "succeeded", "live-migrated to n2 in 1.2s").progress == 1
    assert state.finish_task(task.id, "succeeded", "live-migrated to n2").message == "live-migrated to n2 in 1.2s"
    with pytest.raises(NotFound):
        state.finish_task("nosuch", "failed", "x")


def test_nodes_and_update(state):
    state.put(layout.node("n1"), NodeRecord(name="n1", coordinator=True))
    state.update_node("n1", lambda n: n.model_copy(update={"daemon_state": "run"}))
    assert [n.daemon_state for n in state.nodes()] == ["run"]


def test_console_is_bounded(state):
    a = spec()
    state.define_vm(a)
    state.append_console(a.uuid, [f"line {i}" for i in range(LOG_LINES + 500)])
    lines = state.console(a.uuid)
    assert len(lines) == LOG_LINES and lines[-1] == f"line {LOG_LINES + 499}"
    state.append_console(a.uuid, ["x" * 300_000])  # one oversized line cannot blow the limit
    assert sum(len(x) + 1 for x in state.console(a.uuid)) <= CONSOLE_BYTES


def test_faults_count_and_clear(state):
    state.raise_fault("dead-n2", "node-dead", "node n2 is dead", node="n2")
    fault = state.raise_fault("dead-n2", "node-dead", "node n2 is still dead", node="n2")
    assert fault.count == 2 and [f.id for f in state.faults()] == ["dead-n2"]
    state.clear_fault("dead-n2")
    assert state.faults() == []


def test_tasks(state):
    task = state.create_task("flush", "n1", total=3)
    state.update_task(task.id, state="running", progress=1)
    assert state.task(task.id).progress == 1 and state.task(task.id).state == "running"


def test_status_not_written_for_removed_vm(state):
    a = spec()
    state.define_vm(a)
    state.remove_vm(a.uuid)
    state.set_vm_status(a.uuid, VmStatus(state="running", node="n1"))
    assert not state.zk.exists(layout.vm(a.uuid))


def test_lock_is_exclusive(state):
    with state.lock("fence", "n1"), pytest.raises(Conflict):
        other = ClusterState(state.zk)
        with other.lock("fence", "n2", timeout=0.5):
            pass


def test_acl_refuses_clients_without_the_cluster_credentials(state, zookeeper):
    state.set_maintenance(True)
    assert state.maintenance()
    stranger = make_client(zookeeper.hosts + "/state-tests", timeout=5)
    stranger.start(timeout=10)
    try:
        with pytest.raises(NoAuthError):
            stranger.get(layout.MAINTENANCE)
    finally:
        stranger.stop()
        stranger.close()


def test_a_write_cut_off_by_a_lost_connection_is_retried(zookeeper, workdir):
    """The connection to ZooKeeper goes silent (a proxy in between is frozen) while a compare-and-set update is in
    flight: kazoo gives up on the connection and fails the request; the update waits for a new connection and
    lands once, instead of failing."""
    import signal
    import threading
    import time

    from tests.harness.ports import STATE_ZK_PORT
    from tests.harness.procs import Proc

    port = STATE_ZK_PORT
    argv = ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork", f"TCP:{zookeeper.hosts}"]
    proxy = Proc("zk-proxy", argv, workdir / "zk-proxy.log")
    zk = make_client(f"127.0.0.1:{port}", user="pvc", password="retry-test", timeout=6)
    try:
        wait_until("the proxy", lambda: zk.start(timeout=2) or True, 10)
        st = ClusterState(zk)
        path = f"/retry-test/{uuid.uuid4()}"
        st.put(path, NodeRecord(name="n1", cpus=1))
        lost = threading.Event()
        zk.add_listener(lambda s: lost.set() if s != "CONNECTED" else None)
        os.killpg(proxy.pid, signal.SIGSTOP)  # the proxy and the connection it forks
        result: list[object] = []

        def bump() -> None:
            try:
                result.append(st.update(path, NodeRecord, lambda r: r.model_copy(update={"cpus": r.cpus + 1})))
            except Exception as exc:  # what the test reports if the retry does not happen
                result.append(exc)

        writer = threading.Thread(target=bump)
        writer.start()
        assert lost.wait(15), "kazoo never noticed the silent connection"
        time.sleep(0.5)
        assert not result, f"the update did not wait for a new connection: {result}"
        os.killpg(proxy.pid, signal.SIGCONT)
        writer.join(20)
        assert result and isinstance(result[0], NodeRecord), result
        assert st.get(path, NodeRecord)[0].cpus == 2
        zk.delete(path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proxy.pid, signal.SIGCONT)
        zk.stop()
        zk.close()
        proxy.stop(timeout=1)


def test_finished_tasks_and_osd_requests_are_pruned_newest_kept(state):
    from pvc.nodeos.state.models import OsdRequest

    tasks = {kind: [state.create_task(kind, "x") for _ in range(4)] for kind in ("flush", "migrate")}
    for made in tasks.values():
        for task in made[:3]:
            time.sleep(0.01)  # distinct `updated`
            state.finish_task(task.id, "succeeded", "done")
    running = tasks["flush"][3].id  # not finished: never pruned
    assert state.prune_tasks(keep_per_kind=1) == 4
    left = {t.id for t in state.tasks()}
    assert left == {running, tasks["flush"][2].id, tasks["migrate"][3].id, tasks["migrate"][2].id}
    finished: list[Literal["pending", "done", "failed"]] = ["done", "failed", "done", "pending"]
    for i, done in enumerate(finished):
        state.put_osd_request(OsdRequest(id=f"r{i}", node="n1", selector={}, task="t", state=done, created=i))
    assert state.prune_osd_requests(keep=1) == 2
    assert [r.id for r in state.osd_requests()] == ["r2", "r3"]


def test_a_node_record_is_created_only_when_missing(state):
    assert state.create_node(NodeRecord(name="n1")) is True
    state.update_node("n1", lambda r: r.model_copy(update={"domain_state": "flushed"}))
    assert state.create_node(NodeRecord(name="n1")) is False
    assert state.node("n1").domain_state == "flushed"
