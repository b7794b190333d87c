"""The `pvc` command line end to end: the real console script against the real API (gunicorn over ZooKeeper).

`api_cluster` (registered nodes, no pvcd) covers reads, define, meta, tasks, faults and every error message;
a TLS gunicorn covers certificate errors; `runtime` (three pvcd + libvirtd + QEMU) covers what an administrator
does with the CLI alone: cluster status, define and start a VM, live-migrate it, flush and ready a node, read the
VM's console log.
"""

from __future__ import annotations

import json
import ssl
import subprocess
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
import yaml

from pvc.cli.client import fingerprint
from pvc.cli.output import printable
from pvc.nodeos.state import layout
from pvc.nodeos.state.models import FormationProgress, FormationStep, LogRing
from tests.harness.api import ApiServer, networks
from tests.harness.cli import PVC, Cli
from tests.harness.cluster import cluster_toml, tiny_vm_json
from tests.harness.http_stub import self_signed
from tests.harness.ports import free_port


@pytest.fixture
def cli(api_cluster, tmp_path) -> Cli:
    c = Cli(tmp_path / "client")
    # as an administrator adds a cluster: the initial key and the pinned cluster CA from its cluster.toml
    c.ok("connection", "add", "test", "--from-config", str(api_cluster.config), "--address", "127.0.0.1", "--port",
         str(api_cluster.port))  # fmt: skip
    return c


def vm_file(folder: Path, name: str, **fields: Any) -> Path:
    """A definition file, as YAML (the CLI also reads JSON and domain XML)."""
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(tiny_vm_json(name, **fields)))
    return path


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# -- reads -----------------------------------------------------------------------------------------------------------


def test_cluster_status_in_every_format(cli, api_cluster):
    _, expected = api_cluster.call("GET", "/api/v1/cluster", key=api_cluster.key)
    table = cli.ok("cluster", "status")
    assert "cluster:      comptest" in table
    assert f"nodes:        3 ({expected['nodes']['by_state']['run']} run)" in table
    assert cli.json("cluster", "status") == expected
    assert yaml.safe_load(cli.ok("cluster", "status", "--format", "yaml")) == expected


def test_node_list_and_info(cli):
    lines = cli.ok("node", "list").splitlines()
    assert lines[0].split() == ["NAME", "ROLE", "DAEMON", "DOMAIN", "MEM", "FREE", "VCPUS", "LOAD", "VMS", "KEEPALIVE"]
    assert [line.split()[:4] for line in lines[1:]] == [
        ["n1", "coordinator", "run", "ready"],
        ["n2", "coordinator", "run", "ready"],
        ["n3", "coordinator", "run", "ready"],
    ]
    assert lines[1].split()[4] == "4096M/8192M"
    assert [n["name"] for n in cli.json("node", "list", "^n[13]$")] == ["n1", "n3"]  # the original's REGEX
    assert "is not a regular expression" in cli.run("node", "list", "n[").stderr
    nodes = cli.json("node", "list")
    assert [n["name"] for n in nodes] == ["n1", "n2", "n3"]
    info = cli.ok("node", "info", "n2")
    assert "daemon state:        run" in info and "memory free:         3584M" in info
    assert cli.json("node", "info", "n3")["resources"]["mem_free"] == 3072
    assert cli.fails("node", "info", "nosuch") == "pvc: not found: node 'nosuch'"


def test_node_log_and_primary_request(cli, api_cluster):
    api_cluster.state.put(layout.node_log("n1"), LogRing(lines=["one", "two", "three"]))
    assert cli.ok("node", "log", "n1", "--lines", "2") == "two\nthree\n"
    assert cli.json("node", "log", "n1") == {"lines": ["one", "two", "three"]}
    assert cli.fails("node", "log", "n9") == "pvc: not found: node 'n9'"
    res = cli.run("node", "log", "n1", "--lines", "0")
    assert res.returncode == 2 and "0 is not in the range 1<=x<=10000" in res.stderr
    assert cli.ok("node", "primary", "n2").strip() == "node n2 was asked to become the primary"
    assert api_cluster.state.primary_request() == "n2"
    api_cluster.state.clear_primary_request()


def test_formation_faults_and_maintenance(cli, api_cluster):
    state = api_cluster.state
    state.set_formation(FormationProgress(node="n1", steps=[FormationStep(name="zookeeper", state="done")], done=True))
    rows = cli.ok("cluster", "formation").splitlines()
    assert rows[0].split() == ["NODE", "FORMED", "STEP", "STATE", "UPDATED", "MESSAGE"]
    assert rows[1].split()[:4] == ["n1", "yes", "zookeeper", "done"]

    fault_id = unique("cli-fault")
    state.raise_fault(fault_id, "test", "a fault for the CLI test", node="n3")
    listed = cli.ok("cluster", "faults")
    row = next(line for line in listed.splitlines() if line.startswith(fault_id))
    assert row.split()[1:4] == ["test", "n3", "1"] and row.endswith("a fault for the CLI test")
    assert any(f["id"] == fault_id for f in cli.json("cluster", "faults"))
    assert cli.ok("cluster", "fault", "ack", fault_id).strip() == f"acknowledged fault {fault_id}"
    assert [f["acknowledged"] for f in cli.json("cluster", "fault", "list", fault_id)] == [True]
    assert cli.fails("cluster", "fault", "ack", "nosuch") == "pvc: not found: fault 'nosuch'"
    assert cli.ok("cluster", "fault-clear", fault_id).strip() == f"cleared fault {fault_id}"
    assert fault_id not in {f.id for f in state.faults()}
    assert cli.fails("cluster", "fault-clear", fault_id) == f"pvc: not found: fault '{fault_id}'"

    assert cli.ok("cluster", "maintenance", "on").strip() == "maintenance: on (fencing is paused)"
    try:
        assert state.maintenance() is True
        assert cli.ok("cluster", "maintenance").strip() == "maintenance: on"
        assert cli.json("cluster", "maintenance") == {"enabled": True}
    finally:
        assert cli.ok("cluster", "maintenance", "off").strip() == "maintenance: off"
    assert state.maintenance() is False


# -- VMs -------------------------------------------------------------------------------------------------------------


@pytest.fixture
def lan(api_cluster):
    """Networks 100 and 101 for the VMs' NICs, removed after the test."""
    with networks(api_cluster.state, 100, 101):
        yield


def test_define_list_info_meta_and_remove(cli, api_cluster, tmp_path, lan):
    name = unique("cli-web")
    out = cli.ok(
        "vm", "define", "--name", name, "--memory", "64", "--vcpus", "2", "--machine", "pc", "--node", "n2",
        "--disk", "vms/web-root,size=10G", "--disk", "vms/web-seed,device=cdrom,bus=scsi", "--nic", "100,model=e1000e",
        "--node-limit", "n1,n2", "--selector", "vcpus", "--autostart", "--method", "live-only", "--max-downtime", "250",
        "--tag", "web", "--tag", "blue",
    )  # fmt: skip
    spec = api_cluster.state.find_vm(name)
    assert out.strip() == f"defined VM '{name}' ({spec.uuid}) on n2; it is stop"
    assert spec.node == "n2" and spec.state == "stop"
    d = spec.definition
    assert (d.vcpus, d.memory_mib, d.machine) == (2, 64, "pc")
    assert [(x.volume, x.device, x.bus, x.read_only, x.size) for x in d.disks] == [
        ("vms/web-root", "disk", "virtio", False, 10 * 1024**3),
        ("vms/web-seed", "cdrom", "scsi", True, None),
    ]
    assert [(n.network, n.model) for n in d.nics] == [(100, "e1000e")] and d.nics[0].mac
    assert d.placement.model_dump() == {"node_limit": ["n1", "n2"], "selector": "vcpus", "autostart": True}
    assert (d.migration.method, d.migration.max_downtime_ms, d.tags) == ("live-only", 250, ["web", "blue"])

    row = next(line for line in cli.ok("vm", "list", "--tag", "blue").splitlines() if line.startswith(name))
    assert row.split() == [name, "stop", "stopped", "n2", "-", "64M", "2", "web,blue"]
    assert name in {v["name"] for v in cli.json("vm", "list", "--node", "n2", "--state", "stop")}
    assert name not in {v["name"] for v in cli.json("vm", "list", "--node", "n1")}
    assert name not in {v["name"] for v in cli.json("vm", "list", "--tag", "green")}

    info = cli.ok("vm", "info", name)
    assert f"uuid:               {spec.uuid}" in info and "migration method:   live-only" in info, info
    assert "disk:               vms/web-root (disk, virtio, cache none, 10737418240 bytes)" in info, info
    assert f"nic:                network 100 {d.nics[0].mac} (e1000e)" in info, info
    xml = cli.ok("vm", "info", spec.uuid, "--xml")
    assert (
        xml
        == cli.ok("vm", "dump", name)
        == api_cluster.call("GET", f"/api/v1/vms/{name}", key=api_cluster.key)[1]["xml"]
    )
    assert '<source protocol="rbd" name="vms/web-root">' in xml
    assert cli.json("vm", "info", name)["definition"]["migration"]["max_downtime_ms"] == 250

    shown = cli.ok("vm", "meta", name)
    assert "node limit:         n1,n2" in shown and "selector:           vcpus" in shown, shown
    cli.ok("vm", "meta", name, "--selector", "default", "--no-autostart", "--max-downtime", "default", "--tag", "x")
    d = api_cluster.state.find_vm(name).definition
    assert (d.placement.selector, d.placement.autostart, d.migration.max_downtime_ms, d.tags) == (
        None,
        False,
        None,
        ["x"],
    )
    assert d.placement.node_limit == ["n1", "n2"] and d.migration.method == "live-only"  # untouched
    assert cli.json("vm", "meta", name, "--limit", "", "--no-tags", "--method", "shutdown") == {
        "placement": {"node_limit": [], "selector": None, "autostart": False},
        "migration": {"method": "shutdown", "max_downtime_ms": None, "timeout_s": None},
        "tags": [],
    }
    assert cli.fails("vm", "meta", name, "--limit", "n1,n7") == (
        "pvc: invalid request: node_limit names 'n7', which is not a node (n1, n2, n3) (field: placement.node_limit)"
    )
    res = cli.run("vm", "meta", name, "--tag", "a", "--no-tags")
    assert res.returncode == 2 and "--tag and --no-tags contradict each other" in res.stderr

    assert cli.ok("vm", "start", name).strip() == f"start {name}: requested; it wants start, is stopped"
    assert api_cluster.state.find_vm(name).state == "start"
    assert cli.fails("vm", "start", name) == (
        "pvc: conflict: cannot start a VM in state 'start' (allowed from: disable, fail, stop)"
    )
    assert cli.fails("vm", "remove", name, "--yes") == (
        "pvc: conflict: cannot remove a VM in state 'start' (allowed from: disable, fail, stop)"
    )
    cli.ok("vm", "stop", name)
    cli.ok("vm", "disable", name)
    assert api_cluster.state.find_vm(name).state == "disable"

    res = cli.run("vm", "remove", name, stdin="n\n")
    assert res.returncode == 1 and f"Remove VM '{name}'?" in res.stderr
    assert api_cluster.state.find_vm(name).name == name  # still there
    res = cli.run("vm", "remove", name, stdin="y\n")
    assert res.returncode == 0 and res.stdout.strip() == f"removed VM '{name}'"
    assert cli.fails("vm", "info", name) == f"pvc: not found: VM '{name}'"


def test_vm_network_add_and_remove(cli, api_cluster, lan):
    name = unique("cli-nic")
    cli.ok("vm", "define", "--name", name, "--memory", "64", "--nic", "100")
    out = cli.ok("vm", "network", "add", name, "101", "--model", "e1000e").strip()
    d = api_cluster.state.find_vm(name).definition
    added = d.nics[1]
    assert [(n.network, n.model) for n in d.nics] == [(100, "virtio"), (101, "e1000e")] and added.mac
    assert out == (
        f"added NIC {added.mac} (e1000e) on network 101 to VM '{name}'; VM '{name}' is stopped, so it applies when "
        "it starts"
    ), out
    assert cli.fails("vm", "network", "add", name, "4321") == (
        f"pvc: invalid request: nics.2.network: NIC 2 is on network 4321, which does not exist (networks: "
        f"{', '.join(str(v) for v in sorted(api_cluster.state.network_vnis()))}); create it first (pvc network add) "
        "(field: nics.2.network)"
    )
    assert cli.fails("vm", "network", "add", name, "100", "--mac", added.mac) == (
        f"pvc: conflict: VM '{name}' already has a NIC with MAC {added.mac}"
    )
    second = cli.json("vm", "network", "add", name, "101", "--mac", "52:54:00:ab:cd:01")
    assert [n["mac"] for n in second["definition"]["nics"]][-1] == "52:54:00:ab:cd:01"
    assert cli.fails("vm", "network", "remove", name, "101").startswith(
        f"pvc: invalid request: VM '{name}' has 2 NICs on network 101"
    )
    out = cli.ok("vm", "network", "remove", name, "101", "--mac", "52:54:00:ab:cd:01").strip()
    assert out.startswith(f"removed NIC 52:54:00:ab:cd:01 on network 101 from VM '{name}'"), out
    cli.ok("vm", "network", "remove", name, "101")
    assert [n.network for n in api_cluster.state.find_vm(name).definition.nics] == [100]
    assert cli.fails("vm", "network", "remove", name, "101") == f"pvc: not found: NIC of VM '{name}' on network 101"
    assert cli.run("vm", "network", "remove", name, "0").returncode == 2  # not a VNI: a usage error
    status, err = api_cluster.call("DELETE", "/api/v1/networks/100", key=api_cluster.key)
    assert status == 409 and name in err["detail"], err  # a network with VMs on it stays
    cli.ok("vm", "remove", name, "--yes")


def test_define_from_files_and_modify(cli, api_cluster, tmp_path):
    name = unique("cli-file")
    as_json = tmp_path / "vm.json"
    as_json.write_text(json.dumps(tiny_vm_json(name, tags=["json"])))
    cli.ok("vm", "define", "--file", str(as_json))
    assert api_cluster.state.find_vm(name).tags == ["json"]
    dumped = tmp_path / "vm.xml"
    dumped.write_text(cli.ok("vm", "dump", name).replace('<vcpu placement="static">1<', '<vcpu placement="static">4<'))
    assert cli.ok("vm", "modify", name, "--file", str(dumped)).strip() == (
        f"modified VM '{name}'; it is stopped, so the new definition applies when it starts"
    )
    assert api_cluster.state.find_vm(name).vcpus == 4
    info = tmp_path / "info.yaml"  # what `pvc vm info --format yaml` prints, edited, is a definition too
    info.write_text(cli.ok("vm", "info", name, "--format", "yaml").replace("memory_mib: 64", "memory_mib: 96"))
    cli.ok("vm", "modify", name, "-f", str(info))
    assert api_cluster.state.find_vm(name).memory_mib == 96
    res = cli.run("vm", "define", "--file", str(as_json), "--vcpus", "2")
    assert res.returncode == 2 and "give either --file or definition options, not both (--vcpus)" in res.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: x\nmemory_mib: [64\n")
    line = cli.fails("vm", "define", "--file", str(broken))
    assert line.startswith(f"pvc: {broken}: line 3, column 1: not JSON, YAML or a domain XML"), line


def test_define_errors_carry_the_servers_detail(cli, api_cluster, tmp_path):
    name = unique("cli-dup")
    path = vm_file(tmp_path, name)
    cli.ok("vm", "define", "-f", str(path))
    assert cli.fails("vm", "define", "-f", str(path)) == f"pvc: conflict: a VM named '{name}' already exists"
    broken = tmp_path / "broken.xml"
    broken.write_text("<domain><name>x</name>")
    res = cli.run("vm", "define", "-f", str(broken))
    assert res.returncode == 1 and res.stderr.splitlines() == [
        "pvc: invalid request: PVC cannot import 1 part of the domain XML (field: xml)",
        "  line 1, column 23: not well-formed XML: no element found",
    ]
    hostile = tmp_path / "hostile.xml"
    hostile.write_text(
        "<domain type='kvm'><name>h</name><memory unit='MiB'>64</memory><seclabel type='none'/><devices>"
        "<emulator>/bin/sh</emulator><disk type='file'><source file='/etc/shadow'/><target dev='vda'/></disk>"
        "</devices></domain>"
    )
    res = cli.run("vm", "define", "-f", str(hostile))
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.splitlines() == [
        "pvc: invalid request: PVC cannot import 3 parts of the domain XML (field: xml)",
        "  seclabel: security labels are set by PVC; remove <seclabel>",
        "  devices/emulator: PVC sets the emulator (/usr/bin/qemu-system-x86_64); remove <emulator>",
        "  devices/disk/source/@file: host file disks are not allowed; use an RBD volume "
        "(<disk type='network'><source protocol='rbd' name='pool/volume'/>)",
    ], res.stderr
    other = unique("cli-other")
    assert cli.fails("vm", "define", "--name", other, "--memory", "64", "--limit", "n1,zz") == (
        "pvc: invalid request: node_limit names 'zz', which is not a node (n1, n2, n3) (field: placement.node_limit)"
    )
    assert cli.fails("vm", "define", "--name", other, "--memory", "64", "--node", "zz") == "pvc: not found: node 'zz'"
    assert cli.fails("vm", "define", "--name", other, "--memory", "1G", "--vcpus", "300") == (
        "pvc: invalid request: definition.vcpus: Input should be less than or equal to 255 (field: definition.vcpus)"
    )
    res = cli.run("vm", "define", "--name", other, "--memory", "64", "--disk", "vms/x,speed=9")
    assert res.returncode == 2 and "--disk 'vms/x,speed=9': unknown option 'speed'" in res.stderr
    # from standard input
    piped = unique("cli-stdin")
    res = cli.run("vm", "define", "-f", "-", stdin=json.dumps(tiny_vm_json(piped, memory_mib=128)))
    assert res.returncode == 0 and api_cluster.state.find_vm(piped).memory_mib == 128
    huge = unique("cli-huge")
    line = cli.fails("vm", "define", "-f", str(vm_file(tmp_path, huge, memory_mib=100000)))
    assert line.startswith("pvc: no target node: no node can take it (n1: 4096 MiB free, the VM needs 100000 MiB")


def test_migrate_a_stopped_vm_and_tasks(cli, api_cluster, tmp_path):
    name = unique("cli-mig")
    cli.ok("vm", "define", "-f", str(vm_file(tmp_path, name)), "--node", "n1")
    out = cli.ok("vm", "migrate", name, "--target", "n3")
    assert out.strip() == f"migrate {name}: succeeded: home node is now n3"  # not running: only the home moves
    spec = api_cluster.state.find_vm(name)
    assert (spec.node, spec.last_node) == ("n3", "n1")
    assert cli.ok("vm", "unmigrate", name, "--wait").strip() == f"unmigrate {name}: succeeded: home node is now n1"
    assert cli.fails("vm", "unmigrate", name) == (
        f"pvc: conflict: VM '{name}' has not been migrated: there is no node to return it to"
    )
    assert cli.fails("vm", "move", name, "--target", "n1") == f"pvc: conflict: VM '{name}' is already on n1"
    assert cli.fails("vm", "move", name, "--target", "n8") == "pvc: no target node: there is no node 'n8'"
    cli.ok("vm", "move", name)  # the selector picks: n2 has more free memory than n3
    assert api_cluster.state.find_vm(name).node == "n2"

    tasks = cli.json("task", "list")
    mine = [t for t in tasks if t["target"] == name]
    assert [t["kind"] for t in mine] == ["move", "unmigrate", "migrate"]  # newest first
    assert all(t["state"] == "succeeded" for t in mine)
    row = next(line for line in cli.ok("task", "list").splitlines() if line.startswith(mine[0]["id"]))
    assert row.split()[1:5] == ["move", name, "succeeded", "1/1"]
    shown = cli.ok("task", "show", mine[0]["id"])
    assert f"target:    {name}" in shown and "state:     succeeded" in shown
    assert cli.ok("task", "show", mine[0]["id"], "--wait").strip() == f"move {name}: succeeded: home node is now n2"
    assert cli.fails("task", "show", "0123456789abcdef") == "pvc: not found: task '0123456789abcdef'"


def test_wait_without_a_node_daemon_gives_up_with_the_reason(cli, api_cluster, tmp_path):
    name = unique("cli-wait")
    cli.ok("vm", "define", "-f", str(vm_file(tmp_path, name)), "--node", "n1")
    started = time.monotonic()
    res = cli.run("vm", "start", name, "--wait", "--timeout", "2")
    assert 2 <= time.monotonic() - started < 20
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.splitlines() == [
        f"start {name}: wants start, is stopped",  # progress, then the verdict
        f"pvc: gave up waiting after 2 s: VM '{name}' wants start on n1 but is stopped",
    ]


def test_console_lines(cli, api_cluster, tmp_path):
    name = unique("cli-con")
    cli.ok("vm", "define", "-f", str(vm_file(tmp_path, name)))
    assert cli.ok("vm", "console", name) == ""
    api_cluster.state.append_console(api_cluster.state.find_vm(name).uuid, ["boot", "login:"])
    assert cli.ok("vm", "console", name) == "boot\nlogin:\n"
    assert cli.ok("vm", "console", name, "--lines", "1") == "login:\n"
    assert cli.json("vm", "console", name) == {"lines": ["boot", "login:"]}


def test_shell_completion_asks_the_api(cli, api_cluster, tmp_path):
    name = unique("cli-comp")
    cli.ok("vm", "define", "-f", str(vm_file(tmp_path, name)))
    env = {**cli.env, "_PVC_COMPLETE": "bash_complete", "COMP_WORDS": "pvc vm info cli-comp", "COMP_CWORD": "3"}
    out = subprocess.run([str(PVC)], capture_output=True, text=True, env=env, timeout=30).stdout
    assert f"plain,{name}" in out.splitlines()
    env.update(COMP_WORDS="pvc node flush ", COMP_CWORD="3")
    out = subprocess.run([str(PVC)], capture_output=True, text=True, env=env, timeout=30).stdout
    assert out.splitlines() == ["plain,n1", "plain,n2", "plain,n3"]
    script = cli.ok("completion", "bash")
    assert "_PVC_COMPLETE=bash_complete" in script and "complete -o nosort -F _pvc_completion pvc" in script
    assert "_PVC_COMPLETE=zsh_complete" in cli.ok("completion", "zsh")
    assert "_PVC_COMPLETE=fish_complete" in cli.ok("completion", "fish")


# -- authentication and reachability ---------------------------------------------------------------------------------


def test_bad_key_missing_key_and_unreachable_api(cli, api_cluster):
    where = ("--from-config", str(api_cluster.config), "--address", "127.0.0.1", "--port", str(api_cluster.port))
    cli.ok("connection", "add", "wrong", *where, "--key", "nope")
    cli.ok("connection", "add", "nokey", *where, "--key", "")
    port = free_port()
    cli.ok("connection", "add", "down", "--address", "127.0.0.1", "--port", str(port), "--key", "k")
    assert cli.fails("-c", "wrong", "vm", "list") == (
        "pvc: the API rejected the key of connection 'wrong' (401): the API key is not valid for this cluster"
    )
    assert cli.fails("-c", "nokey", "cluster", "status").startswith(
        "pvc: connection 'nokey' has no API key and the API requires one (401)"
    )
    assert cli.fails("-c", "down", "node", "list") == (
        f"pvc: cannot reach the API at https://127.0.0.1:{port}: connection refused"
    )
    env_choice = cli.run("vm", "list", timeout=30)
    assert env_choice.returncode == 0  # the default is still 'test'
    cli.env["PVC_CONNECTION"] = "wrong"
    try:
        assert cli.fails("vm", "list").startswith("pvc: the API rejected the key of connection 'wrong' (401)")
        assert cli.ok("-c", "test", "vm", "list")  # -c wins over PVC_CONNECTION
    finally:
        del cli.env["PVC_CONNECTION"]


@pytest.fixture
def tls_api(api_cluster, zookeeper, workdir, tmp_path):
    """The API under gunicorn with the administrator's own certificate (self-signed for 127.0.0.1), over the same
    cluster state."""
    folder = workdir / f"api-tls-{uuid.uuid4().hex[:6]}"
    cert, key = self_signed(folder, ["127.0.0.1"])
    config = folder / "cluster.toml"
    config.write_text(cluster_toml(["n1", "n2", "n3"]) + f'[api]\ntls_cert_file = "{cert}"\ntls_key_file = "{key}"\n')
    with ApiServer.running(folder, config, zookeeper.hosts, free_port()) as server:
        yield server, cert


def test_tls_errors_against_gunicorn(cli, api_cluster, tls_api):
    server, cert = tls_api
    port, key = str(server.port), api_cluster.key
    cli.ok("connection", "add", "tls", "--address", "127.0.0.1", "--port", port, "--tls", "--key", key)
    line = cli.fails("-c", "tls", "cluster", "status")
    assert line.startswith(
        f"pvc: TLS error talking to https://127.0.0.1:{port}: certificate verify failed: self-signed certificate"
    )
    assert "--ca-file" in line
    assert cli.json("-c", "tls", "--insecure", "cluster", "status")["name"] == "comptest"
    cli.ok("connection", "add", "tls-ca", "--address", "127.0.0.1", "--port", port, "--tls", "--key", key,
           "--ca-file", str(cert))  # fmt: skip
    assert cli.json("-c", "tls-ca", "cluster", "status")["name"] == "comptest"
    cli.ok("connection", "add", "tls-lax", "--address", "127.0.0.1", "--port", port, "--tls", "--key", key,
           "--insecure")  # fmt: skip
    assert "comptest" in cli.ok("-c", "tls-lax", "cluster", "status")
    cli.ok("connection", "add", "plain", "--address", "127.0.0.1", "--port", port, "--no-tls", "--key", key)
    line = cli.fails("-c", "plain", "cluster", "status")
    assert line.startswith(f"pvc: the API at http://127.0.0.1:{port} closed the connection without answering")
    assert "--tls" in line


def test_a_certificate_the_pinned_cluster_ca_did_not_sign_names_both_fingerprints(cli, api_cluster, tls_api):
    server, cert = tls_api
    cli.ok("connection", "add", "pinned", "--from-config", str(api_cluster.config), "--address", "127.0.0.1",
           "--port", str(server.port))  # fmt: skip
    line = cli.fails("-c", "pinned", "cluster", "status")
    served = fingerprint(ssl.PEM_cert_to_DER_cert(cert.read_text()))
    ca = fingerprint(ssl.PEM_cert_to_DER_cert(api_cluster.ca_pem))
    assert line.startswith(
        f"pvc: TLS error talking to https://127.0.0.1:{server.port}: the server presents a certificate"
    )
    assert f"SHA-256 fingerprint {served}" in line and f"(SHA-256 {ca}) did not sign" in line
    assert "--from-config FILE --replace" in line


def test_plain_http_to_the_api_gets_no_answer(cli, api_cluster):
    cli.ok("connection", "add", "plain", "--address", "127.0.0.1", "--port", str(api_cluster.port), "--no-tls",
           "--key", api_cluster.key)  # fmt: skip
    line = cli.fails("-c", "plain", "cluster", "status")
    assert line.startswith(f"pvc: the API at http://127.0.0.1:{api_cluster.port} closed the connection without")


def test_cluster_key_add_list_revoke_restore(cli, api_cluster, tmp_path):
    name = unique("cli")
    made = cli.run("cluster", "key", "add", name, "--role", "read-only")
    assert made.returncode == 0, made.stderr
    key = made.stdout.strip()
    assert len(key) == 43 and "shown only now" in made.stderr
    listed = cli.ok("cluster", "key", "list")
    row = next(line.split() for line in listed.splitlines() if line.startswith(name))
    assert row[:3] == [name, "read-only", "api"] and key not in listed
    key_file = tmp_path / "ro.key"
    key_file.write_text(key + "\n")
    cli.ok("connection", "add", "ro", "--from-config", str(api_cluster.config), "--address", "127.0.0.1", "--port",
           str(api_cluster.port), "--key-file", str(key_file))  # fmt: skip
    assert cli.json("-c", "ro", "cluster", "status")["name"] == "comptest"
    assert cli.fails("-c", "ro", "cluster", "maintenance", "on") == (
        "pvc: forbidden: this operation needs an API key with the role 'admin'; the key "
        f"'{name}' has the role 'read-only'"
    )
    assert cli.fails("-c", "ro", "cluster", "key", "list").startswith("pvc: forbidden:")
    assert cli.ok("cluster", "key", "revoke", name).strip() == f"revoked API key '{name}' (read-only, api)"
    assert cli.fails("cluster", "key", "restore", name) == f"pvc: not found: API key '{name}'"  # deleted
    assert cli.fails("cluster", "key", "revoke", "initial").startswith("pvc: conflict: 'initial' is the last admin key")


# -- the administrator's day, on three simulated servers --------------------------------------------------------------


def wait_for_console(cli: Cli, vm: str, text: str, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    console = ""
    while time.monotonic() < deadline:
        console = cli.ok("vm", "console", vm)
        if text in console:
            return console
        time.sleep(0.5)
    raise AssertionError(f"no {text!r} on the console of {vm} after {timeout:g} s: {console!r}")


@pytest.fixture
def runtime_api(runtime):
    zk_hosts = f"127.0.0.1:{runtime.zk_host_port}"
    with ApiServer.running(runtime.dir / "api", runtime.dir / "cluster.toml", zk_hosts, free_port()) as server:
        yield server


def test_administrator_scenario(runtime, runtime_api, tmp_path):
    cli = Cli(tmp_path / "client")
    # the initial API key derives from the join key in cluster.toml; the address here is the test's forwarder
    cli.ok("connection", "add", "rt", "--from-config", str(runtime.dir / "cluster.toml"), "--address", "127.0.0.1",
           "--port", str(runtime_api.port))  # fmt: skip

    status = cli.ok("cluster", "status")
    assert "nodes:        3 (3 run)" in status
    primary = cli.json("cluster", "status")["primary"]
    assert primary in runtime.nodes
    assert [n["daemon_state"] for n in cli.json("node", "list")] == ["run"] * 3

    # SeaBIOS writes to the serial port (PVC renders <bios useserial>), so the console log has something to show
    out = cli.ok("vm", "define", "--name", "admin-vm", "--memory", "64", "--machine", "pc", "--node", "n1")
    vm_uuid = out.split("(")[1].split(")")[0]
    assert out.strip() == f"defined VM 'admin-vm' ({vm_uuid}) on n1; it is stop"

    res = cli.run("vm", "start", "admin-vm", "--wait", "--timeout", "90")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "start admin-vm: running on n1\n"
    assert runtime.where(vm_uuid) == ["n1"]
    boot = wait_for_console(cli, "admin-vm", "SeaBIOS")

    res = cli.run("node", "flush", "n1", "--wait", timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "flush n1: succeeded: flushed 1 VM(s)\n"
    assert "flush n1: succeeded 1/1: flushed 1 VM(s)" in res.stderr.splitlines()
    assert cli.json("node", "info", "n1")["domain_state"] == "flushed"
    away = runtime.where(vm_uuid)
    assert len(away) == 1 and away[0] in ("n2", "n3")
    info = cli.json("vm", "info", "admin-vm")
    assert (info["node"], info["last_node"], info["running_on"]) == (away[0], "n1", away[0])

    res = cli.run("node", "ready", "n1", "--wait", timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout == "ready n1: succeeded: returned 1, started 0 VM(s)\n"
    assert cli.json("node", "info", "n1")["domain_state"] == "ready"
    assert runtime.where(vm_uuid) == ["n1"]

    res = cli.run("vm", "migrate", "admin-vm", "--target", "n2", "--wait", timeout=300)
    assert res.returncode == 0, res.stderr
    assert res.stdout.startswith("migrate admin-vm: succeeded: live-migrated to n2")
    assert runtime.where(vm_uuid) == ["n2"]
    row = next(line for line in cli.ok("vm", "list").splitlines() if line.startswith("admin-vm"))
    assert row.split()[:5] == ["admin-vm", "start", "running", "n2", "n1"]

    kinds = [(t["kind"], t["target"], t["state"]) for t in cli.json("task", "list")]
    assert kinds[:3] == [
        ("migrate", "admin-vm", "succeeded"),
        ("ready", "n1", "succeeded"),
        ("flush", "n1", "succeeded"),
    ]

    console = cli.ok("vm", "console", "admin-vm")
    assert console.startswith(boot), "the console log survives the migrations"
    assert "Booting from Hard Disk" in console and "\x1b" not in console  # the guest's escapes do not reach us
    raw = cli.json("vm", "console", "admin-vm")["lines"]
    assert any("\x1b" in line for line in raw)  # JSON keeps the lines as they are: the firmware's escapes too
    assert printable(raw).splitlines() == console.splitlines()
    assert cli.ok("vm", "console", "admin-vm", "--lines", "1").splitlines() == console.splitlines()[-1:]
    assert cli.ok("node", "log", "n2", "--lines", "50").strip()

    res = cli.run("vm", "stop", "admin-vm", "--wait", "--timeout", "60")
    assert res.returncode == 0 and res.stdout == "stop admin-vm: stopped\n", res.stderr
    assert runtime.where(vm_uuid) == []
    assert cli.ok("vm", "remove", "admin-vm", "--yes").strip() == "removed VM 'admin-vm'"
