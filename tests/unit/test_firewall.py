"""The node firewall's ruleset: accepted by the real `nft -c` for every example and lab config, built from the
config's ports and exact node addresses, shaped by [firewall]; and the ports table of docs/security.md is the one
rendered from the same data."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from pvc.config.load import load_text
from pvc.nodeos.formation import firewall
from pvc.nodeos.formation.machinery import Context, StepFailed
from tests.harness.examples import NAMES, ROOT, example

CONFIGS = [example(name) for name in NAMES]


def cfg_of(text: str):
    result = load_text(text, "c.toml")
    assert result.valid, [p.format("c.toml") for p in result.errors]
    return result.config


def rule(ruleset: str, comment: str) -> list[str]:
    return [line.strip() for line in ruleset.splitlines() if line.strip().endswith(f'comment "{comment}"')]


@pytest.fixture(scope="module")
def nft() -> str:
    """`nft`, when it can talk to nf_tables (a check needs the kernel: `nft -c` validates in a kernel transaction)."""
    binary = shutil.which("nft")
    assert binary, "nft is missing: install the nftables package (ci/setup.sh)"
    probe = subprocess.run([binary, "list", "tables"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"nft cannot talk to the kernel's nf_tables: {probe.stderr.strip()}")
    return binary


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_nft_accepts_the_ruleset_of_every_node_of_every_example(nft, path, tmp_path):
    cfg = cfg_of(path.read_text())
    for node in cfg.nodes:
        text = firewall.render(cfg, node)
        out = tmp_path / f"{node.name}.nft"
        out.write_text(text)
        check = subprocess.run([nft, "-c", "-f", str(out)], capture_output=True, text=True)
        assert check.returncode == 0, f"{path.name} {node.name}: {check.stderr}\n{text}"


def test_nft_refuses_a_broken_ruleset(nft, example_text, tmp_path):
    """The check is a real one: formation fails with nft's reason on a ruleset it refuses."""
    cfg = cfg_of(example_text("production-5node"))
    bad = tmp_path / "bad.nft"
    bad.write_text(firewall.render(cfg, cfg.nodes[0]).replace("tcp dport 2181", "tcp dport 99999"))
    refused = subprocess.run([nft, "-c", "-f", str(bad)], capture_output=True, text=True)
    assert refused.returncode != 0 and "99999" in refused.stderr


def test_default_drop_and_essentials(example_text):
    cfg = cfg_of(example_text("lab-3node"))
    text = firewall.render(cfg, cfg.nodes[0])
    assert "table inet pvc {" in text and "flush ruleset" not in text  # only PVC's own table
    assert text.index("table inet pvc\ndelete table inet pvc\n") < text.index("table inet pvc {")  # idempotent load
    assert "type filter hook input priority filter; policy drop;" in text
    for essential in ('iifname "lo" accept', "ct state established,related accept", "icmp type {", "icmpv6 type {"):
        assert essential in text
    assert rule(text, "dhcp-client") == ['udp sport 67 udp dport 68 accept comment "dhcp-client"']
    assert "meta mark & 0x00100000 == 0x00100000 accept" in text


def test_cluster_services_only_from_exact_node_addresses(example_text):
    cfg = cfg_of(example_text("lab-3node"))
    text = firewall.render(cfg, cfg.node("node2"))
    nodes_cluster = "{ 198.51.100.11, 198.51.100.12, 198.51.100.13, 198.51.100.250 }"
    nodes_storage = "{ 203.0.113.11, 203.0.113.12, 203.0.113.13, 203.0.113.250 }"
    expected = {
        "zookeeper": f'iifname "eth1" ip saddr {nodes_cluster} tcp dport 2181',
        "zookeeper-quorum": f'iifname "eth1" ip saddr {nodes_cluster} tcp dport 2888',
        "zookeeper-election": f'iifname "eth1" ip saddr {nodes_cluster} tcp dport 3888',
        "ceph-mon": f'iifname "eth2" ip saddr {nodes_storage} tcp dport 3300',
        "ceph-mon-v1": f'iifname "eth2" ip saddr {nodes_storage} tcp dport 6789',
        "ceph-osd-mgr": f'iifname "eth2" ip saddr {nodes_storage} tcp dport 6800-7300',
        "postgresql": f'iifname "eth1" ip saddr {nodes_cluster} tcp dport 5432',
        "patroni": f'iifname "eth1" ip saddr {nodes_cluster} tcp dport 8008',
        "libvirt-tls": f'iifname "eth1" ip saddr {nodes_cluster} tcp dport 16514',
        "migration": f'iifname "eth1" ip saddr {nodes_cluster} tcp dport 49152-49215',
        "vxlan": f'iifname "eth1" ip saddr {nodes_cluster} udp dport 4789',
    }
    for name, start in expected.items():
        assert rule(text, name) == [f'{start} accept comment "{name}"'], name
    assert rule(text, "bgp") == [  # the fabric over the cluster network, the [bgp] router (the lab's) upstream
        f'iifname "eth1" ip saddr {nodes_cluster} tcp dport 179 accept comment "bgp"',
        'iifname "eth0" ip saddr { 192.0.2.253 } tcp dport 179 accept comment "bgp"',
    ]
    assert "16509" not in text  # libvirt's plain TCP port is never opened
    body = text.split("table inet pvc {", 1)[1]
    for line in body.splitlines():
        if "198.51.100." in line or "203.0.113." in line:
            assert not re.search(r"\d/\d", line), f"a cluster service admits a subnet: {line}"
    # the upstream network: the API from anywhere on its interface, SSH from its subnet (the default admin network)
    assert 'iifname "eth0" tcp dport 7370 accept comment "api"' in text
    assert rule(text, "ssh") == ['ip saddr { 192.0.2.0/24 } tcp dport 22 accept comment "ssh"']


def test_services_follow_the_nodes_role(example_text):
    cfg = cfg_of(example_text("production-5node"))
    coordinator = next(n for n in cfg.nodes if n.coordinator)
    hypervisor = next(n for n in cfg.nodes if not n.coordinator)
    on_coordinator = {s.name for s in firewall.services(cfg) if s.on == "coordinators"}
    assert on_coordinator == {
        "api",
        "zookeeper",
        "zookeeper-quorum",
        "zookeeper-election",
        "ceph-mon",
        "ceph-mon-v1",
    } | {
        "postgresql",
        "patroni",
    }
    coord_text, hyper_text = firewall.render(cfg, coordinator), firewall.render(cfg, hypervisor)
    for name in on_coordinator:
        assert rule(coord_text, name) and not rule(hyper_text, name), name
    for name in ("ceph-osd-mgr", "libvirt-tls", "migration", "vxlan", "ssh"):
        assert rule(hyper_text, name), name
    # quorum ports admit only the coordinators (and the floating IP they hold)
    quorum = rule(coord_text, "zookeeper-quorum")[0]
    coordinator_ips = [str(n.ip.cluster) for n in cfg.coordinators]
    assert all(ip in quorum for ip in coordinator_ips)
    assert str(hypervisor.ip.cluster) not in quorum and str(hypervisor.ip.cluster) in rule(coord_text, "zookeeper")[0]


def test_ports_come_from_the_config(example_text):
    text = example_text("lab-3node") + (
        "\n[zookeeper]\nclient_port = 2281\n[patroni]\npostgres_port = 5532\nrest_port = 8108\n[api]\nport = 7470\n"
    )
    cfg = cfg_of(text)
    ruleset = firewall.render(cfg, cfg.nodes[0])
    for name, port in (("zookeeper", 2281), ("postgresql", 5532), ("patroni", 8108), ("api", 7470)):
        assert all(f"dport {port} accept" in r for r in rule(ruleset, name)), name
    for default in ("dport 2181 ", "dport 5432 ", "dport 8008 ", "dport 7370 "):
        assert default not in ruleset


def test_firewall_table_adds_sources_and_sets_the_admin_networks(example_text):
    base = example_text("lab-3node")  # its [bgp] names the lab's router, 192.0.2.253
    cfg = cfg_of(
        base
        + '\n[firewall]\nssh = ["10.9.0.0/16", "192.0.2.7/32"]\napi = ["203.0.113.0/24"]\nceph = ["10.20.0.0/24"]\n'
    )
    text = firewall.render(cfg, cfg.nodes[0])
    assert rule(text, "ssh") == ['ip saddr { 10.9.0.0/16, 192.0.2.7/32 } tcp dport 22 accept comment "ssh"']
    assert rule(text, "api (firewall.api)") == [
        'ip saddr { 203.0.113.0/24 } tcp dport 7370 accept comment "api (firewall.api)"'
    ]
    assert len(rule(text, "ceph-osd-mgr (firewall.ceph)")) == 1 and len(rule(text, "ceph-mon (firewall.ceph)")) == 1
    assert rule(text, "bgp")[1] == 'iifname "eth0" ip saddr { 192.0.2.253 } tcp dport 179 accept comment "bgp"'
    closed = cfg_of(example_text("lab-3node") + "\n[firewall]\nssh = []\n")
    assert rule(firewall.render(closed, closed.nodes[0]), "ssh") == []  # SSH from nowhere: console only


def test_firewall_table_errors_and_warnings(example_text):
    text = example_text("lab-3node")
    bad = load_text(text + '\n[firewall]\napi = ["192.0.2.7"]\n', "c.toml")
    assert not bad.valid and bad.errors[0].key == "firewall.api[0]" and "prefix length" in bad.errors[0].message
    unknown = load_text(text + '\n[firewall]\nssh_from = ["192.0.2.0/24"]\n', "c.toml")
    assert not unknown.valid and unknown.errors[0].key == "firewall.ssh_from"
    off = load_text(text + "\n[firewall]\nenabled = false\n", "c.toml")
    assert off.valid and any(w.key == "firewall.enabled" and "open" in w.message for w in off.warnings)
    wide = load_text(text + '\n[firewall]\nzookeeper = ["0.0.0.0/0"]\n', "c.toml")
    assert wide.valid and any(w.key == "firewall.zookeeper[0]" for w in wide.warnings)
    assert firewall.render_off() == "table inet pvc\ndelete table inet pvc\n"


def test_docs_ports_table_is_the_rendered_one(example_text):
    """docs/security.md shows the table rendered from the same services list (with the default ports)."""
    table = firewall.ports_table(cfg_of(example_text("production-3node")))
    docs = (ROOT / "docs" / "security.md").read_text()
    assert table in docs, "docs/security.md's ports table is stale: paste firewall.ports_table() of an example"


def test_formation_step_fails_with_nfts_reason(nft, example_text, tmp_path, monkeypatch):
    """A ruleset `nft -c` refuses stops formation, naming the file and nft's reason, before anything is loaded.
    (Loading a good one is exercised in a namespace: tests/component/test_firewall.py.)"""
    cfg = cfg_of(example_text("lab-1node"))
    path = tmp_path / "firewall.nft"
    monkeypatch.setattr(firewall, "RULESET_PATH", str(path))
    monkeypatch.setattr(
        firewall, "render", lambda *_: "table inet pvc {\n\tchain input { tcp dport 99999 accept }\n}\n"
    )
    ctx = Context(cfg=cfg, node=cfg.nodes[0], config_path=tmp_path, join_key="", secrets=None)  # type: ignore[arg-type]
    with pytest.raises(StepFailed) as failed:
        firewall.step(ctx)
    assert str(path) in str(failed.value) and "99999" in failed.value.log
