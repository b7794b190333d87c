"""/networks under a real gunicorn against a real ZooKeeper: create, validation naming the field, the MTU clamp,
reservations, ACLs checked with nft -c, config-owned networks refused, a network in use refused naming the VMs; and
the `pvc network` CLI against it."""

from __future__ import annotations

import json
from typing import Any

import pytest

from pvc.nodeos.state.models import NetworkRecord, VmSpec
from tests.harness.cli import Cli
from tests.harness.cluster import tiny_vm

V1 = "/api/v1"
LAN = {"vni": 4100, "name": "lan41", "type": "managed", "subnet": "10.41.0.0/24", "gateway": "10.41.0.1"}


def call(api, method: str, path: str, body: object = None) -> tuple[int, Any]:
    return api.call(method, path, body=body, key=api.key)


@pytest.fixture
def clean(api_cluster):
    yield api_cluster
    for vni in api_cluster.state.network_vnis():
        api_cluster.state.remove_network(vni)
    for spec in api_cluster.state.vms():
        if spec.name.startswith("netuser"):
            api_cluster.state.remove_vm(spec.uuid)


def test_create_clamps_the_mtu_and_lists_the_owner(clean):
    status, net = call(
        clean,
        "POST",
        f"{V1}/networks",
        body={**LAN, "mtu": 9000, "dhcp": {"start": "10.41.0.100", "end": "10.41.0.200"}},
    )
    assert status == 201, net
    assert net["mtu"] == 1450 and net["owner"] == "api" and net["vms"] == []
    assert net["domain"] == "lan41.comptest.invalid"
    status, listed = call(clean, "GET", f"{V1}/networks")
    assert [(n["vni"], n["owner"]) for n in listed] == [(4100, "api")]
    status, err = call(clean, "POST", f"{V1}/networks", body=LAN)
    assert status == 409 and "VNI 4100" in err["detail"]


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"gateway": "10.42.0.1"}, "gateway", "outside"),
        ({"dhcp": {"start": "10.41.0.100", "end": "10.41.0.50"}}, "dhcp.end", "before its start"),
        ({"subnet": "192.0.2.0/24", "gateway": "192.0.2.1"}, "subnet", "overlaps the cluster network"),
        ({"type": "bridged", "vni": 41, "subnet": None, "gateway": None}, "type", "[network.bridged]"),
        ({"vni": 0}, "vni", None),
        ({"subnet": "10.41.0.1/24"}, "subnet", "host bits"),
    ],
)
def test_create_refusals_name_the_field(clean, change, field, words):
    body = {k: v for k, v in {**LAN, **change}.items() if v is not None}
    status, err = call(clean, "POST", f"{V1}/networks", body=body)
    assert status == 400 and err["field"] == field, err
    if words:
        assert words in err["detail"], err


def test_reservations_and_acls(clean):
    assert call(clean, "POST", f"{V1}/networks", body=LAN)[0] == 201
    res = {"mac": "52:54:00:41:00:01", "ip": "10.41.0.10", "hostname": "web"}
    assert call(clean, "POST", f"{V1}/networks/4100/reservations", body=res)[0] == 201
    status, err = call(clean, "POST", f"{V1}/networks/4100/reservations", body={**res, "ip": "10.41.0.11"})
    assert status == 409
    status, err = call(clean, "POST", f"{V1}/networks/4100/reservations", body={**res, "mac": "52:54:00:41:00:02"})
    assert status == 400 and err["field"] == "reservations.1.ip" and "reserved twice" in err["detail"]
    status, leases = call(clean, "GET", f"{V1}/networks/4100/leases")
    assert leases == [{"mac": res["mac"], "ip": res["ip"], "hostname": "web", "expires": 0, "static": True}]

    rule = {"description": "ssh", "action": "accept", "protocol": "tcp", "ports": "22"}
    status, added = call(clean, "POST", f"{V1}/networks/4100/acls", body=rule)
    assert status == 201 and added["order"] == 10
    status, err = call(
        clean, "POST", f"{V1}/networks/4100/acls", body={**rule, "description": "bad", "protocol": "any"}
    )
    assert status == 400 and err["field"] == "ports", err
    status, err = call(
        clean, "POST", f"{V1}/networks/4100/acls", body={**rule, "description": "b2", "source": "10.0.0.1/8"}
    )
    assert status == 400 and err["field"] == "source", err
    first = {"description": "first", "action": "drop", "order": 1}
    assert call(clean, "POST", f"{V1}/networks/4100/acls", body=first)[0] == 201
    status, rules = call(clean, "GET", f"{V1}/networks/4100/acls")
    assert [r["description"] for r in rules] == ["first", "ssh"]
    assert call(clean, "DELETE", f"{V1}/networks/4100/acls/first")[0] == 200
    assert call(clean, "DELETE", f"{V1}/networks/4100/acls/first")[0] == 404
    assert call(clean, "DELETE", f"{V1}/networks/4100/reservations/52-54-00-41-00-01")[0] == 200  # either spelling
    assert call(clean, "DELETE", f"{V1}/networks/4100/reservations/52:54:00:41:00:01")[0] == 404


@pytest.mark.parametrize(
    ("path", "field", "words"),
    [
        ("/networks/abc", "vni", "'abc' is not a VNI"),
        ("/networks/0/acls", "vni", "'0' is not a VNI"),
        ("/networks/16777216/leases", "vni", "(a number 1-16777215)"),
        ("/networks/4100/reservations/52:54:00:41:00", "mac", "is not a MAC address"),
        ("/networks/4100/reservations/01:00:5e:00:00:01", "mac", "multicast"),
        ("/networks/4100/acls/a%20b", "description", "should match pattern"),
    ],
)
def test_path_parameters_are_checked_naming_them(clean, path, field, words):
    assert call(clean, "POST", f"{V1}/networks", body=LAN)[0] == 201
    method = "DELETE" if "/reservations/" in path or "/acls/" in path else "GET"
    status, err = call(clean, method, f"{V1}{path}")
    assert status == 400 and err["field"] == field and words in err["detail"], err


def test_config_owned_networks_refuse_changes(clean):
    clean.state.create_network(
        NetworkRecord(
            vni=4200,
            name="cfgnet",
            type="managed",
            owner="config",
            mtu=1450,
            subnet="10.42.0.0/24",
            gateway="10.42.0.1",
        )
    )
    for method, path, body in (
        ("PATCH", "/networks/4200", {"nat": True}),
        ("DELETE", "/networks/4200", None),
        ("POST", "/networks/4200/acls", {"description": "x", "action": "drop"}),
        ("POST", "/networks/4200/reservations", {"mac": "52:54:00:42:00:01", "ip": "10.42.0.10"}),
    ):
        status, err = call(clean, method, f"{V1}{path}", body=body)
        assert status == 409 and "cluster.toml" in err["detail"], (method, path, err)


def test_a_network_in_use_is_not_removed(clean):
    assert call(clean, "POST", f"{V1}/networks", body=LAN)[0] == 201
    vm_uuid = "0f0f0f0f-0000-4000-8000-000000004100"
    definition = tiny_vm("netuser1", vm_uuid, nics=[{"network": 4100, "mac": "52:54:00:41:00:99"}])
    clean.state.define_vm(VmSpec(uuid=vm_uuid, name="netuser1", definition=definition, node="n1"))
    status, err = call(clean, "DELETE", f"{V1}/networks/4100")
    assert status == 409 and "netuser1" in err["detail"], err
    assert call(clean, "GET", f"{V1}/networks/4100")[1]["vms"] == ["netuser1"]
    clean.state.remove_vm("0f0f0f0f-0000-4000-8000-000000004100")
    assert call(clean, "DELETE", f"{V1}/networks/4100")[0] == 200
    assert call(clean, "GET", f"{V1}/networks/4100")[0] == 404


def run_cli(api, tmp_path, *args: str) -> str:
    cli = Cli(tmp_path / "client")
    if not (tmp_path / "client").exists():
        cli.ok("connection", "add", "test", "--from-config", str(api.config), "--address", "127.0.0.1", "--port",
               str(api.port))  # fmt: skip
    return cli.ok(*args)


def test_cli_network_commands(clean, tmp_path):
    out = run_cli(
        clean,
        tmp_path,
        "network",
        "add",
        "4100",
        "--name",
        "lan41",
        "--type",
        "managed",
        "--subnet",
        "10.41.0.0/24",
        "--gateway",
        "10.41.0.1",
        "--dhcp-start",
        "10.41.0.100",
        "--dhcp-end",
        "10.41.0.150",
    )
    assert "created network lan41 (VNI 4100, managed, MTU 1450)" in out
    out = run_cli(clean, tmp_path, "network", "list")
    assert "lan41" in out and "10.41.0.100-10.41.0.150" in out
    run_cli(
        clean,
        tmp_path,
        "network",
        "acl",
        "add",
        "4100",
        "web",
        "--action",
        "accept",
        "--protocol",
        "tcp",
        "--ports",
        "80,443",
    )
    rules = json.loads(run_cli(clean, tmp_path, "network", "acl", "list", "4100", "--format", "json"))
    assert [(r["description"], r["ports"]) for r in rules] == [("web", "80,443")]
    run_cli(clean, tmp_path, "network", "dhcp", "add", "4100", "10.41.0.20", "52:54:00:41:00:20", "--hostname", "db")
    assert "db" in run_cli(clean, tmp_path, "network", "dhcp", "list", "4100", "--static")
    out = run_cli(clean, tmp_path, "network", "modify", "4100", "--nat", "--acl-policy", "drop")
    info = json.loads(run_cli(clean, tmp_path, "network", "info", "4100", "--format", "json"))
    assert info["nat"] is True and info["acl_policy"] == "drop"
    assert "removed network 4100" in run_cli(clean, tmp_path, "network", "remove", "4100")
