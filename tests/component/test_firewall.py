"""The node firewall in a real kernel: formation's firewall step loads the ruleset into a "node" namespace that has
listeners on PVC's service ports; a cluster node's address gets through, a stranger on the same subnet is dropped
(its connection times out), and the upstream network reaches only SSH and the API.

Namespaces (this module's own, `fw<prefix>`): n1 is the node under test, n2 another node of cluster.toml, x a machine
that is not in it; each on the upstream (198.51.100.0/24, eth0) and cluster (192.0.2.0/24, eth1) bridges.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.cluster import CLUSTER, ROOT, UPSTREAM, cluster_toml
from tests.harness.netlab import NetLab
from tests.harness.ports import NS_PREFIX
from tests.harness.procs import Proc, wait_until

PORTS = {"zookeeper": 2181, "zookeeper-quorum": 2888, "libvirt-tls": 16514, "patroni": 8008, "postgresql": 5432}
OTHER_PORTS = {"ssh": 22, "api": 7370, "libvirt-plain-tcp": 16509}
HOSTS = {"n1": 11, "n2": 12, "x": 99}

LISTEN = """
import socket, sys, threading
def serve(port):
    s = socket.create_server(("0.0.0.0", port), reuse_port=True)
    while True:
        c, _ = s.accept(); c.close()
for p in sys.argv[1:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
print("listening", flush=True)
threading.Event().wait()
"""

PROBE = """
import concurrent.futures, json, socket, sys
def probe(target):
    host, port = target.rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=2).close()
        return "open"
    except socket.timeout:
        return "dropped"
    except ConnectionRefusedError:
        return "refused"
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    print(json.dumps(dict(zip(sys.argv[1:], pool.map(probe, sys.argv[1:])))))
"""

STEP = """
import sys
from pvc.config.load import load
from pvc.nodeos.formation import firewall
from pvc.nodeos.formation.machinery import Context
firewall.RULESET_PATH = sys.argv[2]
cfg = load(sys.argv[1]).config
print(firewall.step(Context(cfg=cfg, node=cfg.node("n1"), config_path=None, join_key="", secrets=None)))
"""


def in_ns(lab: NetLab, node: str, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["ip", "netns", "exec", lab.ns(node), *argv], capture_output=True, text=True, check=check, cwd=ROOT, timeout=60
    )


@pytest.fixture
def fwlab(tmp_path):
    lab = NetLab(f"fw{NS_PREFIX}", [UPSTREAM, CLUSTER])  # not under NS_PREFIX: a runtime cluster's teardown
    lab.up(list(HOSTS), HOSTS)  # removes namespaces under its prefix
    config = tmp_path / "cluster.toml"
    config.write_text(cluster_toml(["n1", "n2", "n3"]))
    ports = [str(p) for p in (*PORTS.values(), *OTHER_PORTS.values())]
    listener = Proc(
        "listener", ["ip", "netns", "exec", lab.ns("n1"), sys.executable, "-c", LISTEN, *ports], tmp_path / "l.log"
    )
    try:
        wait_until("the listeners", lambda: "listening" in listener.tail(), 10, proc=listener)
        yield lab, config, tmp_path
    finally:
        listener.kill()
        lab.down()


def probe(lab: NetLab, node: str, targets: list[str]) -> dict[str, str]:
    return json.loads(in_ns(lab, node, sys.executable, "-c", PROBE, *targets).stdout)


def load_firewall(lab: NetLab, config: Path, rules: Path) -> str:
    """Formation's firewall step, run for node n1 inside its namespace."""
    return in_ns(lab, "n1", sys.executable, "-c", STEP, str(config), str(rules)).stdout


def test_cluster_ports_admit_only_node_addresses(fwlab):
    lab, config, tmp = fwlab
    n1 = {net.device: f"{net.prefix}.{HOSTS['n1']}" for net in (UPSTREAM, CLUSTER)}
    cluster_targets = [f"{n1[CLUSTER.device]}:{p}" for p in PORTS.values()]
    before = probe(lab, "x", cluster_targets)
    assert set(before.values()) == {"open"}, before  # the listeners answer anyone until the firewall is loaded

    said = load_firewall(lab, config, tmp / "firewall.nft")
    assert "table inet pvc loaded: default drop" in said, said

    from_node = probe(lab, "n2", [*cluster_targets, f"{n1[CLUSTER.device]}:16509", f"{n1[CLUSTER.device]}:22"])
    assert {t: from_node[t] for t in cluster_targets} == dict.fromkeys(cluster_targets, "open"), from_node
    assert from_node[f"{n1[CLUSTER.device]}:16509"] == "dropped"  # plain-TCP libvirt: never open, even to a node
    assert from_node[f"{n1[CLUSTER.device]}:22"] == "dropped"  # SSH only from the admin networks (the upstream subnet)

    from_stranger = probe(lab, "x", cluster_targets)
    assert from_stranger == dict.fromkeys(cluster_targets, "dropped"), from_stranger

    upstream = probe(
        lab, "x", [f"{n1[UPSTREAM.device]}:22", f"{n1[UPSTREAM.device]}:7370", f"{n1[UPSTREAM.device]}:2181"]
    )
    assert upstream == {
        f"{n1[UPSTREAM.device]}:22": "open",  # the upstream subnet is the default admin network
        f"{n1[UPSTREAM.device]}:7370": "open",  # the API, from the upstream network
        f"{n1[UPSTREAM.device]}:2181": "dropped",  # ZooKeeper is not on the upstream network
    }
    # a node's address arriving on the wrong network is not enough either
    assert probe(lab, "n2", [f"{n1[UPSTREAM.device]}:2181"]) == {f"{n1[UPSTREAM.device]}:2181": "dropped"}


def test_loading_again_is_idempotent_and_keeps_other_tables(fwlab):
    lab, config, tmp = fwlab
    in_ns(lab, "n1", "nft", "add", "table", "inet", "networks-test")  # another table, e.g. a managed network's
    load_firewall(lab, config, tmp / "firewall.nft")
    first = in_ns(lab, "n1", "nft", "list", "table", "inet", "pvc").stdout
    load_firewall(lab, config, tmp / "firewall.nft")  # every boot loads it again
    assert in_ns(lab, "n1", "nft", "list", "table", "inet", "pvc").stdout == first
    tables = in_ns(lab, "n1", "nft", "list", "tables").stdout.split("\n")
    assert sorted(t for t in tables if t) == ["table inet networks-test", "table inet pvc"]

    config.write_text(cluster_toml(["n1", "n2", "n3"]) + "[firewall]\nenabled = false\n")
    assert "off" in load_firewall(lab, config, tmp / "firewall.nft")
    tables = in_ns(lab, "n1", "nft", "list", "tables").stdout.split("\n")
    assert [t for t in tables if t] == ["table inet networks-test"]
    stranger = f"{CLUSTER.prefix}.{HOSTS['n1']}:2181"
    assert probe(lab, "x", [stranger]) == {stranger: "open"}
