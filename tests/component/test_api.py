"""The API under a real gunicorn against a real ZooKeeper: auth on every route, validation, errors, flows."""

from __future__ import annotations

import http.client
import os
import re
import socket
import ssl
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote

import pytest

from pvc.config.choices import Accelerator
from pvc.config.secrets import libvirt_secret_uuid, vm_mac_prefix
from pvc.nodeos.state import layout
from pvc.nodeos.state.models import Keepalive
from pvc.nodeos.state.vmdef import MAX_NODE_LIMIT, MAX_TAGS
from tests.harness.api import ApiServer, networks
from tests.harness.cluster import JOIN_KEY, tiny_vm_json

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
    for i, (method, path, op) in enumerate(operations(api_cluster)):
        if op.get("security") == []:
            continue
        body: dict[str, object] | None = {} if "requestBody" in op else None
        for key in (None, "wrong-key-" + "x" * 20):
            # one address per operation: a wrong key costs its address a token of the failed-authentication limit
            status, err = api_cluster.call(method, fill(path), body=body, key=key, source=f"127.0.1.{i + 1}")
            assert status == 401, f"{method} {path} with key {key!r} gave {status}"
            assert set(err) == {"error", "detail", "field"} and err["error"] == "unauthorized"
        checked += 1
    assert checked >= 18


def test_wrong_key_is_logged_without_the_key(api_cluster):
    secret = "not-the-key-" + uuid.uuid4().hex
    api_cluster.call("GET", f"{V1}/vms", key=secret)
    log = api_cluster.proc.log.read_text()
    assert "wrong API key" in log and secret not in log


def test_the_api_answers_only_https(api_cluster):
    """Its certificate is the cluster CA's (the harness verifies every call against it, naming 127.0.0.1); plain
    HTTP on the same port gets no HTTP answer."""
    assert api_cluster.url.startswith("https://") and api_cluster.ca_pem
    conn = http.client.HTTPConnection("127.0.0.1", api_cluster.port, timeout=10)
    with pytest.raises((http.client.RemoteDisconnected, http.client.BadStatusLine, ConnectionResetError)):
        conn.request("GET", f"{V1}/health")
        conn.getresponse()
    conn.close()
    other_ca = ssl.create_default_context()  # the system's CAs: none of them signed the cluster's certificate
    with (
        socket.create_connection(("127.0.0.1", api_cluster.port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        other_ca.wrap_socket(raw, server_hostname="127.0.0.1")


def test_bearer_token_is_accepted(api_cluster):
    status, _ = api_cluster.call("GET", f"{V1}/nodes", headers={"Authorization": f"Bearer {api_cluster.key}"})
    assert status == 200


@pytest.mark.parametrize(
    "raw,field,needle",
    [
        (b"{not json", "body", "not valid JSON"),
        (b"[1, 2]", "body", "must be a JSON object"),
        (b'{"xml": "<domain/>", "colour": "red"}', "colour", "unknown field 'colour'"),
        (b'{"node": "n1"}', "body", "give either 'definition' or 'xml'"),
        (b'{"xml": 5}', "xml", "valid string"),
        (b'{"xml": "<notdomain/>"}', "xml", "a domain XML has <domain>"),
        (b'{"xml": "<domain><name>x</name></domain>"}', "xml", "memory: the domain has no <memory>"),
        (b'{"xml": "<domain", "node": "n:1"}', "node", "contains ':'"),
        (b'{"definition": {"name": "x", "memory_mib": 64}, "xml": "<domain/>"}', "body", "either"),
        (b'{"definition": {"name": "x"}}', "definition.memory_mib", "required field"),
        (b'{"definition": {"name": "a:b", "memory_mib": 64}}', "definition.name", "contains ':'"),
        (b'{"definition": {"name": "x", "memory_mib": 64, "gpu": true}}', "definition.gpu", "unknown field"),
        (b'{"definition": {"name": "x", "memory_mib": 8}}', "definition.memory_mib", "greater than or equal to 16"),
        (b'{"definition": {"name": "x", "memory_mib": 64, "vcpus": 256}}', "definition.vcpus", "less than or equal"),
        (b'{"definition": {"name": "x", "memory_mib": "64"}}', "definition.memory_mib", "valid integer"),
        (b'{"definition": {"name": "x", "memory_mib": 64, "disks": [{"volume": "vms"}]}}', "definition.disks.0.volume",
         "'pool/volume'"),
        (b'{"definition": {"name": "x", "memory_mib": 64, "nics": [{"network": 0}]}}', "definition.nics.0.network",
         "greater than or equal to 1"),
        (b'{"definition": {"name": "x", "memory_mib": 64, "nics": [{"network": 5, "mac": "01:00:5e:00:00:01"}]}}',
         "definition.nics.0.mac", "multicast"),
        (b'{"definition": {"name": "x", "memory_mib": 64, "graphics": "vnc", "machine": "virt"}}',
         "definition.machine", "'pc' or 'q35'"),
        (b'{"definition": {"name": "x", "memory_mib": 64, "placement": {"node_limit": ["n1", "n1"]}}}',
         "definition.placement.node_limit", "given twice"),
        (b'{"definition": {"name": "x", "memory_mib": 64, "migration": {"max_downtime_ms": 60001}}}',
         "definition.migration.max_downtime_ms", "less than or equal to 60000"),
    ],
)  # fmt: skip
def test_define_validation_errors_name_the_field(api_cluster, raw, field, needle):
    tree = _data_tree(api_cluster.state.zk)
    status, err = api_cluster.call("POST", f"{V1}/vms", raw=raw, key=api_cluster.key)
    assert status == 400, err
    assert err["field"] == field and needle in err["detail"], err
    assert _data_tree(api_cluster.state.zk) == tree, "a refused define wrote to ZooKeeper"


BASE_XML = (
    "<domain type='kvm'{ns}><name>hostile</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>"
    "<os><type arch='x86_64' machine='pc'>hvm</type></os>{top}<devices>{devices}<serial type='pty'/></devices>"
    "</domain>"
)
QEMU_NS = " xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'"


@pytest.mark.parametrize(
    "kind,parts,path",
    [
        ("host file disk", {"devices": "<disk type='file'><source file='/etc/shadow'/><target dev='vda'/></disk>"},
         "devices/disk/source/@file"),
        ("block device", {"devices": "<disk type='block'><source dev='/dev/sda'/><target dev='vda'/></disk>"},
         "devices/disk/source/@dev"),
        ("dir disk", {"devices": "<disk type='dir'><source dir='/'/><target dev='vda'/></disk>"},
         "devices/disk/source/@dir"),
        ("filesystem passthrough", {"devices": "<filesystem type='mount' accessmode='passthrough'><source dir='/'/>"
                                               "<target dir='root'/></filesystem>"}, "devices/filesystem"),
        ("hostdev", {"devices": "<hostdev mode='subsystem' type='pci' managed='yes'><source><address domain='0' "
                                "bus='1' slot='0' function='0'/></source></hostdev>"}, "devices/hostdev"),
        ("qemu:commandline", {"ns": QEMU_NS, "top": "<qemu:commandline><qemu:arg value='-fw_cfg'/>"
                                                    "</qemu:commandline>"}, "qemu:commandline"),
        ("emulator path", {"devices": "<emulator>/bin/sh</emulator>"}, "devices/emulator"),
        ("seclabel none", {"top": "<seclabel type='none'/>"}, "seclabel"),
        ("seclabel root", {"top": "<seclabel type='static' model='dac'><label>+0:+0</label></seclabel>"}, "seclabel"),
        ("serial to file", {"devices": "<serial type='file'><source path='/etc/evil'/></serial>"},
         "devices/serial[1]/@type"),
    ],
)  # fmt: skip
def test_each_hostile_xml_class_is_refused_by_path_and_writes_nothing(api_cluster, kind, parts, path):
    xml = BASE_XML.format(**{"ns": "", "top": "", "devices": "", **parts})
    tree = _data_tree(api_cluster.state.zk)
    status, err = api_cluster.call("POST", f"{V1}/vms", {"xml": xml, "node": "n1"}, key=api_cluster.key)
    assert status == 400 and err["field"] == "xml", err
    paths = [p["path"] for p in err["problems"]]
    assert path in paths, (kind, err)
    assert err["detail"].splitlines()[0].startswith("PVC cannot import ") and f"\n{path}: " in err["detail"]
    assert _data_tree(api_cluster.state.zk) == tree, f"{kind}: the refused define wrote to ZooKeeper"


def test_not_found(api_cluster):
    for path in ("/vms/nosuch", "/nodes/nosuch", "/tasks/nosuch", "/vms/nosuch/console", "/nosuchroute"):
        status, err = api_cluster.call("GET", V1 + path, key=api_cluster.key)
        assert status == 404 and err["error"] == "not found", (path, err)
    status, err = api_cluster.call("PUT", f"{V1}/vms", {}, key=api_cluster.key)
    assert status == 405 and err["error"] == "method not allowed" and "PUT is not allowed" in err["detail"]


GOOD_PATH_VALUES = {"osd": "1", "vni": "1", "mac": "52:54:00:00:00:01"}  # every other parameter accepts "x"
BAD_PATH_VALUES = ["a:b", "a%2Fb", "a%0Ab", "%1B%5B31m", "a%00b", "-x", ".hidden", "x" * 200, "0", "16777216"]


def _outside(schema: dict, value: str) -> bool:
    """Whether the path value (percent-encoded as sent) is outside what the schema shows."""
    text = unquote(value)
    if "pattern" in schema:
        return re.fullmatch(schema["pattern"], text) is None
    return not (text.isdigit() and schema["minimum"] <= int(text) <= schema["maximum"])


def test_every_path_parameter_refuses_a_bad_value(api_cluster):
    """H1: each path parameter of each operation in the OpenAPI document shows what it accepts (a pattern, or an
    integer's range) and refuses a value outside it with 400 naming the parameter: never 404 (another route) or
    500, whatever the backend."""
    checked = 0
    for method, path, op in operations(api_cluster):
        declared = [p for p in op.get("parameters", []) if p["in"] == "path"]
        for param in declared:
            name, schema = param["name"], param["schema"]
            bounded = schema.get("type") == "integer" and {"minimum", "maximum"} <= schema.keys()
            assert schema.get("pattern") or bounded, f"{method} {path}: {name} shows no pattern or range"
            bad_values = [bad for bad in BAD_PATH_VALUES if _outside(schema, bad)]
            assert len(bad_values) >= 6, (name, bad_values)
            for bad in bad_values:
                url = path.replace("{" + name + "}", bad)
                for other in declared:
                    url = url.replace("{" + other["name"] + "}", GOOD_PATH_VALUES.get(other["name"], "x"))
                status, err = api_cluster.call(method, url, key=api_cluster.key)
                assert status == 400, f"{method} {url} gave {status}: {err}"
                assert err["field"] == name and f"path parameter '{name}'" in err["detail"], (url, err)
            checked += 1
    assert checked >= 30


def test_a_json_body_over_the_cap_is_refused_before_it_is_read(api_cluster):
    """L11/M6: 413 on the Content-Length alone (the body is never sent), and a chunked body once it passes 1 MiB."""
    headers = {"X-Api-Key": api_cluster.key, "Content-Type": "application/json", "Content-Length": str(2 * 1024**2)}
    status, err = api_cluster.headers_only("POST", f"{V1}/vms", headers)
    assert status == 413 and err["error"] == "too large" and "at most 1048576 bytes" in err["detail"], err
    filler = (b'{"xml": "' + b"x" * 65536 for _ in range(1)), (b"x" * 65536 for _ in range(40))
    status, err = api_cluster.chunked("POST", f"{V1}/vms", (c for part in filler for c in part), key=api_cluster.key)
    assert status == 413 and "over the limit of 1048576 bytes" in err["detail"], err
    status, err = api_cluster.call("POST", f"{V1}/vms", raw=b"[" * 100000 + b"]" * 100000, key=api_cluster.key)
    assert status == 400 and "not valid JSON" in err["detail"], err
    for field, limit in (("tags", MAX_TAGS), ("placement.node_limit", MAX_NODE_LIMIT)):
        vm = tiny_vm_json("toomany")
        top, _, sub = field.partition(".")
        items = [f"n{i}" for i in range(limit + 1)]
        vm[top] = {sub: items} if sub else items
        status, err = api_cluster.call("POST", f"{V1}/vms", {"definition": vm}, key=api_cluster.key)
        assert status == 400 and err["field"] == f"definition.{field}", err
        assert f"at most {limit} items" in err["detail"], err


def test_vm_flow_without_a_running_daemon(api_cluster):
    vm = tiny_vm_json("apiflow", tags=["web"], placement={"node_limit": ["n1", "n2"]}, nics=[{"network": 100}])
    if 100 in api_cluster.state.network_vnis():
        api_cluster.state.remove_network(100)
    status, err = api_cluster.call("POST", f"{V1}/vms", {"definition": vm}, key=api_cluster.key)
    assert status == 400 and err["field"] == "nics.0.network", err  # a NIC on a network that does not exist
    assert "NIC 0 is on network 100, which does not exist" in err["detail"], err
    with networks(api_cluster.state, 100):
        vm_flow(api_cluster, vm)


def vm_flow(api_cluster, vm: dict) -> None:
    status, body = api_cluster.call("POST", f"{V1}/vms", {"definition": vm}, key=api_cluster.key)
    assert status == 201, body
    assert body["state"] == "stop" and body["node"] == "n1" and body["tags"] == ["web"]  # n1: the most free memory
    mac = body["definition"]["nics"][0]["mac"]
    assert mac.startswith(vm_mac_prefix(JOIN_KEY) + ":"), mac  # a MAC in the cluster's prefix, stored
    assert body["definition"]["uuid"] == body["uuid"] and f'<mac address="{mac}" />' in body["xml"]
    status, again = api_cluster.call("POST", f"{V1}/vms", {"definition": vm}, key=api_cluster.key)
    assert status == 409 and "already exists" in again["detail"]
    taken = tiny_vm_json("apiflow2", nics=[{"network": 100, "mac": mac}])
    status, err = api_cluster.call("POST", f"{V1}/vms", {"definition": taken}, key=api_cluster.key)
    assert status == 409 and err["detail"] == f"nics.0.mac: MAC address {mac} is already used by VM 'apiflow' " + (
        f"({body['uuid']})"
    )
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
    change = {"placement": {"autostart": True}, "migration": {"max_downtime_ms": 500.0}, "tags": ["web", "db"]}
    status, vm = api_cluster.call("PATCH", f"{V1}/vms/apiflow", change, key=api_cluster.key)
    assert status == 200, vm
    d = vm["definition"]
    assert d["placement"] == {"node_limit": ["n1", "n2"], "selector": None, "autostart": True}
    assert d["migration"]["max_downtime_ms"] == 500 and d["tags"] == vm["tags"] == ["web", "db"]
    assert vm["node"] == "n2" and vm["last_node"] is None
    status, err = api_cluster.call(
        "PATCH", f"{V1}/vms/apiflow", {"placement": {"node_limit": ["n9"]}}, key=api_cluster.key
    )
    assert status == 400 and err["field"] == "placement.node_limit" and "'n9', which is not a node" in err["detail"]
    status, big = api_cluster.call(
        "POST", f"{V1}/vms", {"definition": tiny_vm_json("huge", memory_mib=10**6)}, key=api_cluster.key
    )
    assert status == 409 and "MiB free" in big["detail"]
    status, removed = api_cluster.call("DELETE", f"{V1}/vms/apiflow", key=api_cluster.key)
    assert status == 200 and removed == {"removed": "apiflow", "volumes": [], "kept": []}
    assert api_cluster.state.mac_holder(mac) is None, "the VM's MAC is free again"


def test_get_shows_the_definition_and_the_xml_rendered_for_its_node(api_cluster):
    vm = tiny_vm_json("apiget", firmware="uefi", disks=[{"volume": "vms/apiget-disk", "size": "1G"}])
    status, body = api_cluster.call("POST", f"{V1}/vms", {"definition": vm, "node": "n3"}, key=api_cluster.key)
    assert status == 201, body
    try:
        status, shown = api_cluster.call("GET", f"{V1}/vms/apiget", key=api_cluster.key)
        assert status == 200 and shown["definition"] == body["definition"]
        assert shown["definition"]["disks"][0]["size"] == 1024**3
        xml = shown["xml"]
        secret = libvirt_secret_uuid(JOIN_KEY)
        assert f'<secret type="ceph" uuid="{secret}" />' in xml
        assert "/usr/share/OVMF/OVMF_CODE_4M.fd" in xml and f"/var/lib/pvc/console/{body['uuid']}.log" in xml
        assert shown["original_xml"] is None and shown["refused"] == []
        # the accelerator is the one the VM's node reports
        accelerators: list[tuple[Accelerator, str]] = [("tcg", "qemu"), ("kvm", "kvm")]
        for accel, dom_type in accelerators:
            api_cluster.state.write_keepalive("n3", Keepalive(mem_total=8192, mem_free=3072, cpus=4, accelerator=accel))
            _, shown = api_cluster.call("GET", f"{V1}/vms/apiget", key=api_cluster.key)
            assert f'type="{dom_type}">' in shown["xml"].splitlines()[0], shown["xml"][:60]
    finally:
        api_cluster.call("DELETE", f"{V1}/vms/apiget", key=api_cluster.key)


def test_put_replaces_the_definition_from_json_or_xml(api_cluster):
    status, body = api_cluster.call("POST", f"{V1}/vms", {"definition": tiny_vm_json("apiput")}, key=api_cluster.key)
    assert status == 201, body
    try:
        bigger = {**body["definition"], "vcpus": 2, "memory_mib": 128}
        status, vm = api_cluster.call("PUT", f"{V1}/vms/apiput", {"definition": bigger}, key=api_cluster.key)
        assert status == 200 and (vm["vcpus"], vm["memory_mib"]) == (2, 128)
        edited = vm["xml"].replace('<vcpu placement="static">2</vcpu>', '<vcpu placement="static">3</vcpu>')
        status, vm = api_cluster.call("PUT", f"{V1}/vms/apiput", {"xml": edited}, key=api_cluster.key)
        assert status == 200 and vm["vcpus"] == 3
        renamed = {**bigger, "name": "other"}
        status, err = api_cluster.call("PUT", f"{V1}/vms/apiput", {"definition": renamed}, key=api_cluster.key)
        assert status == 400 and err["field"] == "name" and "the VM is 'apiput'" in err["detail"]
        hostile = edited.replace("</devices>", "<hostdev mode='subsystem' type='usb'/></devices>")
        status, err = api_cluster.call("PUT", f"{V1}/vms/apiput", {"xml": hostile}, key=api_cluster.key)
        assert status == 400 and [p["path"] for p in err["problems"]] == ["devices/hostdev"]
    finally:
        api_cluster.call("DELETE", f"{V1}/vms/apiput", key=api_cluster.key)


def test_path_parameters_follow_the_name_pattern(api_cluster):
    for path, field in (("/vms/a:b", "vm"), ("/nodes/n%0a1", "node"), ("/storage/pools/p:conf=x", "pool")):
        status, err = api_cluster.call("GET", V1 + path, key=api_cluster.key)
        assert status == 400 and err["field"] == field, (path, err)


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


def _data_tree(zk, path: str = "/pvc") -> dict[str, bytes]:
    """Every znode under `path` with its data."""
    tree = {path: zk.get(path)[0]}
    for child in zk.get_children(path):
        tree |= _data_tree(zk, f"{path}/{child}")
    return tree


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
    gets = [fill(path) for method, path, _op in operations(api_cluster) if method == "GET"]
    with ThreadPoolExecutor(max_workers=8) as pool:  # the provisioner's GETs each wait out the database's retries
        list(pool.map(lambda path: api_cluster.call("GET", path, key=api_cluster.key), gets))
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


def test_workers_run_as_the_api_user_and_still_serve(api_cluster, zookeeper):
    """As on a node (PVC_API_USER=pvc-api there; `nobody` here): the master stays root to fork, the workers that
    serve every request run unprivileged and read a group-readable key."""
    import grp
    import shutil
    import subprocess
    import tempfile
    from pathlib import Path

    folder = Path(tempfile.mkdtemp(prefix="pvc-api-user-"))  # traversable by `nobody`, unlike pytest's tmp_path
    folder.chmod(0o755)
    try:
        config = folder / "cluster.toml"
        config.write_text(api_cluster.config.read_text())
        server = ApiServer(
            folder / "api", config, zookeeper.hosts, api_cluster.port + 101, env={"PVC_API_USER": "nobody"}
        )
        key = folder / "api" / "api-tls" / "key.pem"
        os.chown(key, 0, grp.getgrnam("nogroup").gr_gid)
        key.chmod(0o640)
        for d in (folder / "api", folder / "api" / "api-tls"):
            d.chmod(0o755)
        try:
            server.wait_ready()
            assert server.call("GET", f"{V1}/vms", key=api_cluster.key)[0] == 200
            master = server.proc.popen.pid
            users = subprocess.run(["ps", "-o", "user=", "--ppid", str(master)], capture_output=True, text=True).stdout
            assert users.split() == ["nobody", "nobody"]
            assert (
                subprocess.run(["ps", "-o", "user=", "-p", str(master)], capture_output=True, text=True).stdout.strip()
                == "root"
            )
        finally:
            server.stop()
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_on_a_node_the_api_listens_on_its_own_and_the_floating_addresses_only(api_cluster, zookeeper, tmp_path):
    """PVC_NODE instead of PVC_API_BIND, as formation starts it: loopback, the node's upstream and cluster IPs and the
    floating IPs (which this host does not hold: bound with IP_FREEBIND), never 0.0.0.0."""
    import subprocess

    from pvc.config.load import load
    from pvc.config.resolve import api_addresses

    port = api_cluster.port + 102
    config = tmp_path / "cluster.toml"
    config.write_text(api_cluster.config.read_text() + f"[api]\nport = {port}\n")
    cfg = load(config).config
    assert cfg is not None
    with ApiServer.running(
        tmp_path / "a", config, zookeeper.hosts, port, env={"PVC_API_BIND": "", "PVC_NODE": "n1"}
    ) as server:
        assert server.call("GET", f"{V1}/vms", key=api_cluster.key)[0] == 200
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        addresses = sorted(line.split()[3].rsplit(":", 1)[0] for line in listening.splitlines())
    assert addresses == sorted(api_addresses(cfg, cfg.node("n1")))
    assert "0.0.0.0" not in addresses and str(cfg.network.upstream.floating_ip) in addresses
