"""The API under a real gunicorn against a real ZooKeeper: auth on every route, validation, errors, flows."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from pvc.nodeos.state import layout
from pvc.nodeos.state.models import Keepalive
from tests.harness.api import ApiServer
from tests.harness.cluster import tiny_domain_xml

V1 = "/api/v1"


def operations(api) -> list[tuple[str, str, dict]]:
    status, doc = api.call("GET", f"{V1}/openapi.json")
    assert status == 200
    return [(method.upper(), path, op) for path, item in doc["paths"].items() for method, op in item.items()]


def fill(path: str) -> str:
    return (
        path.replace("{vm}", "nosuchvm")
        .replace("{node}", "n1")
        .replace("{task_id}", "nosuchtask")
        .replace("{fault_id}", "nosuchfault")
    )


def test_health_and_spec_need_no_key(api_cluster):
    status, body = api_cluster.call("GET", f"{V1}/health")
    assert status == 200 and body["status"] == "ok" and body["formed"] is True
    status, doc = api_cluster.call("GET", f"{V1}/openapi.json")
    assert status == 200 and doc["openapi"] == "3.1.0"
    status, page = api_cluster.call("GET", f"{V1}/docs")
    assert status == 200 and "<html>" in page and "/api/v1/vms/{vm}/migrate" in page


def test_every_other_route_needs_a_valid_key(api_cluster):
    checked = 0
    for method, path, op in operations(api_cluster):
        if op.get("security") == []:
            continue
        body = {} if "requestBody" in op else None
        for key in (None, "wrong-key-" + "x" * 20):
            status, err = api_cluster.call(method, fill(path), body=body, key=key)
            assert status == 401, f"{method} {path} with key {key!r} gave {status}"
            assert set(err) == {"error", "detail", "field"} and err["error"] == "unauthorized"
        checked += 1
    assert checked >= 18


def test_wrong_key_is_logged_without_the_key(api_cluster):
    secret = "not-the-key-" + uuid.uuid4().hex
    api_cluster.call("GET", f"{V1}/vms", key=secret)
    log = api_cluster.proc.log.read_text()
    assert "wrong API key" in log and secret not in log


def test_bearer_token_is_accepted(api_cluster):
    status, _ = api_cluster.call("GET", f"{V1}/nodes", headers={"Authorization": f"Bearer {api_cluster.key}"})
    assert status == 200


@pytest.mark.parametrize(
    "raw,field,needle",
    [
        (b"{not json", "body", "not valid JSON"),
        (b"[1, 2]", "body", "must be a JSON object"),
        (b'{"xml": "<domain/>", "colour": "red"}', "colour", "unknown field 'colour'"),
        (b'{"node": "n1"}', "xml", "required field 'xml' is missing"),
        (b'{"xml": 5}', "xml", "valid string"),
        (b'{"xml": "<notdomain/>"}', "xml", "expected <domain>"),
        (b'{"xml": "<domain><name>x</name></domain>"}', "xml", "no <memory>"),
        (b'{"xml": "<domain", "autostart": "yes"}', "autostart", "valid boolean"),
        (b'{"xml": "<domain/>", "max_downtime_ms": "300"}', "max_downtime_ms", "integer"),
        (b'{"xml": "<domain/>", "selector": "random"}', "selector", "'mem'"),
    ],
)
def test_define_validation_errors_name_the_field(api_cluster, raw, field, needle):
    status, err = api_cluster.call("POST", f"{V1}/vms", raw=raw, key=api_cluster.key)
    assert status == 400, err
    assert err["field"] == field and needle in err["detail"], err


def test_not_found(api_cluster):
    for path in ("/vms/nosuch", "/nodes/nosuch", "/tasks/nosuch", "/vms/nosuch/console", "/nosuchroute"):
        status, err = api_cluster.call("GET", V1 + path, key=api_cluster.key)
        assert status == 404 and err["error"] == "not found", (path, err)
    status, err = api_cluster.call("PUT", f"{V1}/vms", {}, key=api_cluster.key)
    assert status == 405 and err["error"] == "method not allowed" and "PUT is not allowed" in err["detail"]


def test_vm_flow_without_a_running_daemon(api_cluster):
    xml = tiny_domain_xml("apiflow")
    status, vm = api_cluster.call(
        "POST", f"{V1}/vms", {"xml": xml, "tags": ["web"], "node_limit": ["n1", "n2"]}, key=api_cluster.key
    )
    assert status == 201, vm
    assert vm["state"] == "stop" and vm["node"] == "n1" and vm["tags"] == ["web"]  # n1 has the most free memory
    status, again = api_cluster.call("POST", f"{V1}/vms", {"xml": xml}, key=api_cluster.key)
    assert status == 409 and "already exists" in again["detail"]
    status, listed = api_cluster.call("GET", f"{V1}/vms?tag=web", key=api_cluster.key)
    assert [v["name"] for v in listed] == ["apiflow"]
    status, listed = api_cluster.call("GET", f"{V1}/vms?node=n2", key=api_cluster.key)
    assert listed == []
    status, err = api_cluster.call("POST", f"{V1}/vms/apiflow/state", {"action": "stop"}, key=api_cluster.key)
    assert status == 409 and "cannot stop a VM in state 'stop'" in err["detail"]
    status, err = api_cluster.call("POST", f"{V1}/vms/apiflow/migrate", {"target": "n3"}, key=api_cluster.key)
    assert status == 409 and "node limit" in err["detail"]
    status, task = api_cluster.call(
        "POST", f"{V1}/vms/apiflow/migrate", {"action": "move", "target": "n2"}, key=api_cluster.key
    )
    assert status == 202 and task["state"] == "succeeded"  # not running: only the home changes
    status, vm = api_cluster.call(
        "PATCH", f"{V1}/vms/apiflow/meta", {"autostart": True, "max_downtime_ms": 500.0}, key=api_cluster.key
    )
    assert status == 200 and vm["meta"]["autostart"] is True and vm["meta"]["max_downtime_ms"] == 500
    assert vm["node"] == "n2" and vm["last_node"] is None
    status, big = api_cluster.call(
        "POST", f"{V1}/vms", {"xml": tiny_domain_xml("huge", memory_mib=10**7)}, key=api_cluster.key
    )
    assert status == 409 and "MiB free" in big["detail"]
    status, removed = api_cluster.call("DELETE", f"{V1}/vms/apiflow", key=api_cluster.key)
    assert status == 200 and removed == {"removed": "apiflow"}


def test_maintenance_and_status(api_cluster):
    status, body = api_cluster.call("PUT", f"{V1}/cluster/maintenance", {"enabled": True}, key=api_cluster.key)
    assert status == 200 and body == {"enabled": True}
    status, cluster = api_cluster.call("GET", f"{V1}/cluster", key=api_cluster.key)
    assert cluster["maintenance"] is True and cluster["nodes"]["total"] == 3
    api_cluster.call("PUT", f"{V1}/cluster/maintenance", {"enabled": False}, key=api_cluster.key)


def test_flush_returns_a_task(api_cluster):
    status, task = api_cluster.call("POST", f"{V1}/nodes/n3/flush", key=api_cluster.key)
    assert status == 202 and task["kind"] == "flush" and task["target"] == "n3"
    assert task["state"] == "pending"  # at once: the CLI follows the task
    # a body (older clients sent {"wait": false}) is ignored
    status, again = api_cluster.call("POST", f"{V1}/nodes/n3/ready", {"wait": False}, key=api_cluster.key)
    assert status == 202  # ready may interrupt a flush
    status, node = api_cluster.call("GET", f"{V1}/nodes/n3", key=api_cluster.key)
    assert node["domain_state"] == "unflushing" and node["task"] == again["id"]
    # no pvcd runs here to finish the request: put n3 back for the other tests sharing this cluster
    api_cluster.state.update_node("n3", lambda r: r.model_copy(update={"domain_state": "ready", "task": None}))


def _tree(zk, path: str = "/pvc") -> dict[str, tuple[int, int]]:
    """Every znode under `path` with the zxids of its last change and of its children's last change."""
    stat = zk.exists(path)
    tree = {path: (stat.mzxid, stat.pzxid)}
    for child in zk.get_children(path):
        tree |= _tree(zk, f"{path}/{child}")
    return tree


def test_no_get_writes_and_node_ages_are_on_zookeepers_clock(api_cluster):
    state = api_cluster.state
    stop = threading.Event()

    def pvcd_of_n1() -> None:  # the keepalives the API learns ZooKeeper's time from
        while not stop.wait(0.2):
            state.write_keepalive("n1", Keepalive(mem_total=8192, mem_free=4096, cpus=4))

    writer = threading.Thread(target=pvcd_of_n1)
    writer.start()
    try:
        time.sleep(0.5)  # a worker whose clock started while no pvcd wrote learns the time from these
        n2_written = state.keepalive("n2")[1]
        for _ in range(4):  # each gunicorn worker starts its clock on its first node request
            before = state.zk.set(layout.TASKS, b"").mtime  # ZooKeeper's time, the old way (a write)
            status, nodes = api_cluster.call("GET", f"{V1}/nodes", key=api_cluster.key)
            after = state.zk.set(layout.TASKS, b"").mtime
            assert status == 200
            ages = {n["name"]: n["keepalive_age_s"] for n in nodes}
            assert ages["n1"] is not None and ages["n1"] < 2.0, ages
            assert (before - n2_written) / 1000 - 0.5 <= ages["n2"] <= (after - n2_written) / 1000 + 0.1, ages
    finally:
        stop.set()
        writer.join()
    tree = _tree(state.zk)
    for method, path, _op in operations(api_cluster):
        if method == "GET":
            api_cluster.call(method, fill(path), key=api_cluster.key)
    assert _tree(state.zk) == tree, "a GET request changed ZooKeeper"


def test_unreachable_zookeeper_is_503(workdir, api_cluster):
    config = workdir / "api" / "cluster.toml"
    server = ApiServer(workdir / "api", config, "127.0.0.1:1", api_cluster.port + 100)
    try:
        from tests.harness.procs import wait_until

        wait_until("the API to answer", lambda: server.call("GET", f"{V1}/health")[0] == 503, 60, proc=server.proc)
        status, body = server.call("GET", f"{V1}/health")
        assert body["status"] == "degraded" and body["zookeeper"] is False
        status, err = server.call("GET", f"{V1}/vms", key=api_cluster.key)
        assert status == 503 and err["error"] == "cluster not ready" and "not reachable" in err["detail"]
    finally:
        server.stop()


def test_a_json_body_over_2_mib_is_refused_unread(api_cluster):
    status, err = api_cluster.call("POST", f"{V1}/vms", body={"xml": "x" * (3 * 1024 * 1024)}, key=api_cluster.key)
    assert status == 400 and err["field"] == "body" and "at most 2097152 bytes" in err["detail"], err
