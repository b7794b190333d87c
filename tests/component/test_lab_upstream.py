"""The lab's upstream for real (installer/lab/upstream.py): the lab's network of lab-1node.toml, its router namespace
with real zebra and bgpd, and the world behind it. A stand-in node (the node's namespace with its own bgpd, as
formation would render the peering) announces a managed subnet: the router learns it by BGP, the node reaches the
world through the lab's gateway, the world reaches the subnet through the learned route, and removal leaves
nothing behind."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from pvc.installer.lab import network, upstream
from pvc.installer.lab.command import spawn
from pvc.installer.lab.down import kill_group
from pvc.installer.lab.machine import enter_netns
from pvc.installer.lab.state import CONFIG_DIR
from pvc.installer.lab.up import load_config
from tests.harness import peer
from tests.harness.netlab import kill_all_in
from tests.harness.ports import NS_PREFIX

SUBNET, GATEWAY = "10.100.0.0/24", "10.100.0.1"


def wait(what: str, ok, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = ok()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def ns_run(ns: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=20)


def node_bgpd(ns: str, address: str, router: upstream.RouterPlan, log: Path) -> list[int]:
    """zebra + bgpd in the node's namespace, announcing its connected subnets to the router (as a primary does)."""
    run = upstream.FRR_RUN / ns
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    (run / "zebra.conf").write_text("hostname node1\n")
    (run / "bgpd.conf").write_text(
        f"router bgp {router.cluster_asn}\n bgp router-id {address}\n no bgp ebgp-requires-policy\n"
        f" neighbor {router.address} remote-as {router.asn}\n neighbor {router.address} timers connect 2\n"
        f" address-family ipv4 unicast\n  redistribute connected\n exit-address-family\n"
    )
    for path in (run, *run.iterdir()):
        shutil.chown(path, "frr", "frr")
    pids = []
    for daemon in ("zebra", "bgpd"):
        argv = [f"/usr/lib/frr/{daemon}", "-N", ns, "-f", str(run / f"{daemon}.conf"), "-i", str(run / f"{daemon}.pid")]
        pids.append(spawn(argv, log, preexec_fn=lambda: enter_netns(ns)).pid)
        upstream.wait_vty(run / f"{daemon}.vty", daemon)
    return pids


@pytest.fixture
def lab_network(tmp_path):
    cfg = load_config(CONFIG_DIR / "lab-1node.toml")
    lab_ns = f"{NS_PREFIX}lu"
    net = network.plan(cfg, lab_ns)
    network.destroy(lab_ns, [n.name for n in cfg.nodes])
    network.create(net, cfg.nodes)
    router = upstream.plan(cfg, lab_ns, net.bridges["upstream"])
    assert router is not None
    record = upstream.record(router)
    node_ns = net.node_ns("node1")
    try:
        yield cfg, net, router, record, node_ns
    finally:
        for ns in (node_ns, router.router_ns, router.world_ns, lab_ns):
            kill_all_in(ns)
        upstream.destroy(record)
        network.destroy(lab_ns, [n.name for n in cfg.nodes])
        shutil.rmtree(upstream.FRR_RUN / node_ns, ignore_errors=True)


def test_router_learns_the_managed_subnet_and_the_world_is_reachable(lab_network, tmp_path):
    cfg, net, router, record, node_ns = lab_network
    log = tmp_path / "frr.log"
    upstream.create(router, net.lab_ns, log, record)
    assert len(record.pids) == 2 and record.address == "192.0.2.253" and record.asn == 65501
    assert "neighbor 192.0.2.11 peer-group pvc" in upstream.render_bgpd(router)

    node = cfg.nodes[0]
    # a container node cannot write its /proc/sys (nspawn): the lab turned its forwarding on for the primary's role
    assert ns_run(node_ns, "cat", "/proc/sys/net/ipv4/ip_forward").stdout.strip() == "1"
    up_prefix = net.host_addresses[net.bridges["upstream"]][0].split("/")[1]
    ns_run(node_ns, "ip", "link", "set", "eth0", "up")
    ns_run(node_ns, "ip", "addr", "add", f"{node.ip.upstream}/{up_prefix}", "dev", "eth0")
    ns_run(node_ns, "ip", "route", "add", "default", "via", str(cfg.network.upstream.gateway))
    ns_run(node_ns, "ip", "link", "add", "vmbr100", "type", "bridge")
    ns_run(node_ns, "ip", "addr", "add", f"{GATEWAY}/24", "dev", "vmbr100")
    ns_run(node_ns, "ip", "link", "set", "vmbr100", "up")
    node_bgpd(node_ns, str(node.ip.upstream), router, log)

    status = wait(
        "the router's BGP session with node1 and its learned subnet",
        lambda: (
            (s := upstream.status(record)).sessions.get("192.0.2.11") == "Established" and SUBNET in s.learned and s
        ),
    )
    assert status.learned[SUBNET] == ["192.0.2.11"] and not status.problem, status
    assert status.world == upstream.WORLD_ADDRESS and status.namespace == router.router_ns

    world = peer.start(router.world_ns)
    inside = peer.start(node_ns)
    try:
        # node -> world: through the lab's gateway, which hands the world's subnet to the router
        assert peer.ask(node_ns, upstream.WORLD_ADDRESS) == str(node.ip.upstream)
        # world -> the managed subnet: through the route the router learned by BGP
        assert peer.ask(router.world_ns, GATEWAY) == upstream.WORLD_ADDRESS
    finally:
        world.terminate()
        inside.terminate()
    routes = json.loads(ns_run(router.router_ns, "ip", "-j", "route", "show", SUBNET).stdout)
    assert routes and routes[0]["gateway"] == "192.0.2.11", routes


def test_destroy_removes_the_namespaces_and_frr_folder(lab_network, tmp_path):
    _, net, router, record, _ = lab_network
    upstream.create(router, net.lab_ns, tmp_path / "frr.log", record)
    for pid in record.pids:
        assert Path(f"/proc/{pid}").exists()

    for pid in record.pids:
        kill_group(pid, signal.SIGTERM)
    upstream.destroy(record)
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    assert router.router_ns not in names and router.world_ns not in names
    assert not (upstream.FRR_RUN / router.router_ns).exists()
    assert not any(Path(f"/proc/{pid}").exists() for pid in record.pids)
