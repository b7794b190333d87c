"""The lab's records and what it reads from a node's console: lab.json round trips as typed records, a lab folder
only root can read, the BMC a config gives each node, and formation progress read from the lines `pvc-node` prints."""

from __future__ import annotations

from ipaddress import IPv4Address

import pytest

from pvc.config import lab_hardware as hw
from pvc.installer.lab import observe, state, up, upstream
from pvc.installer.lab.command import LabError
from pvc.installer.lab.machine import mark
from pvc.installer.lab.state import Bmc, Disks, Lab, LabNode, Nic
from pvc.nodeos.boot import console
from tests.harness.examples import example_cluster


def a_lab(tmp_path) -> Lab:
    node = LabNode(
        name="node1",
        id=1,
        netns="lab-node1",
        console_log=str(tmp_path / "node1" / "console.log"),
        dir=str(tmp_path / "node1"),
        disks=Disks(data="/d", osds=["/o0"], config="/c"),
        nics=[Nic(name="eth0", bridge="up0", mac="52:54:00:5c:00:01")],
        ip="192.0.2.11",
        bmc=Bmc(address="192.0.2.101", port=623, username="admin", password="pw"),
        binds=[("/dev/loop0", hw.disk_by_id("data", "node1"))],
    )
    return Lab(
        backend="container",
        boot="kernel",
        config="/x/cluster.toml",
        lab_ns="lab",
        root=str(tmp_path / "root"),
        api_port=17370,
        started=1.0,
        nodes=[node],
    )


def test_lab_json_round_trips_as_typed_records(tmp_path):
    state.make_dir(tmp_path / "lab")
    lab = a_lab(tmp_path)
    state.save(lab, tmp_path / "lab")
    again = state.read(tmp_path / "lab")
    assert again == lab
    assert again.node("node1").binds == [("/dev/loop0", "/dev/disk/by-id/virtio-pvc-data-node1")]
    with pytest.raises(LabError, match="no node 'node9' in this lab \\(nodes: node1\\)"):
        again.node("node9")


def test_a_lab_json_it_cannot_read_is_a_clear_error(tmp_path):
    with pytest.raises(LabError, match="no lab is up"):
        state.read(tmp_path)
    (tmp_path / "lab.json").write_text('{"backend": "vm"}')
    with pytest.raises(LabError, match=r"lab.json is not a lab record .*: boot: Field required"):
        state.read(tmp_path)


def test_the_lab_folder_is_readable_by_root_only(tmp_path):
    folder = tmp_path / "lab"
    folder.mkdir(mode=0o755)
    state.make_dir(folder)
    assert folder.stat().st_mode & 0o777 == 0o700


def test_each_node_gets_the_bmc_its_config_names_or_the_lab_default():
    three = example_cluster("lab-3node")
    assert [up.bmc_of(n) for n in three.nodes][1] == Bmc(
        address="192.0.2.102", port=623, username=hw.BMC_USER, password=hw.BMC_PASSWORD
    )
    one = example_cluster("lab-1node")  # a one-node lab has no fencing, so no [nodes.ipmi]
    assert one.nodes[0].ipmi is None
    assert up.bmc_of(one.nodes[0]) == Bmc(address="127.0.0.2", port=623, username="admin", password="pvc-lab-bmc")


def test_the_example_configs_are_the_lab_default_for_each_backend():
    assert state.example_config("container", 3).name == "lab-3node.toml"
    assert state.example_config("vm", 1).name == "lab-vm-1node.toml"
    with pytest.raises(LabError, match="no example config for 2 nodes"):
        state.example_config("container", 2)


def say(*lines: str) -> str:
    return "".join(console.line(line) + "\n" for line in lines)


def test_formation_progress_is_read_from_the_lines_pvc_node_prints(tmp_path):
    node = a_lab(tmp_path).nodes[0]
    (tmp_path / "node1").mkdir()
    log = node.console_log
    mark(log, "power on")
    with open(log, "a") as f:  # an earlier boot that failed
        f.write(say(console.step_starting(console.step_tag(1, 2, "data")), console.failed("node1", "data")))
    assert observe.node_failure(node) == "PVC-FORMATION-FAILED node=node1 step=data"
    mark(log, "power off")
    mark(log, "power on")
    with open(log, "a") as f:
        f.write(say(console.step_done(console.step_tag(1, 2, "data"), 1.5, "reusing PVCDATA")))
        f.write(say(console.step_starting(console.step_tag(2, 2, "network"))))
    prog = observe.console_progress(node)
    assert prog is not None and not prog.done
    assert [(s.name, s.state) for s in prog.steps] == [("data", "done"), ("network", "running")]
    assert observe.node_failure(node) is None  # that failure was before this power-on
    assert observe.reached(prog, "data") and not observe.reached(prog, "network")
    with open(log, "a") as f:
        f.write(say(console.step_done(console.step_tag(2, 2, "network"), 0.2, ""), console.done("node1", 2)))
    prog = observe.console_progress(node)
    assert prog is not None and prog.done and observe.reached(prog, None)
    with open(log, "a") as f:
        f.write(say(console.waiting("cluster.toml from label PVCCONFIG is invalid")))
    assert observe.node_failure(node) == "PVC-CONFIG-WAITING: cluster.toml from label PVCCONFIG is invalid"


def test_the_lab_upstream_is_the_configs_first_bgp_router():
    """upstream.plan: the router of lab-1node.toml peering with every node; none without [bgp] routers; a router
    outside the upstream subnet is refused naming the key."""
    cfg = up.load_config(state.CONFIG_DIR / "lab-1node.toml")
    router = upstream.plan(cfg, "lab", "up0")
    assert router is not None and (router.address, router.asn, router.cluster_asn) == ("192.0.2.253", 65501, 65500)
    assert (router.router_ns, router.world_ns, router.peers) == ("lab-router", "lab-world", ["192.0.2.11"])
    conf = upstream.render_bgpd(router)
    assert "router bgp 65501" in conf and " neighbor pvc remote-as 65500" in conf
    assert " neighbor 192.0.2.11 peer-group pvc" in conf
    none = cfg.model_copy(update={"bgp": cfg.bgp.model_copy(update={"routers": []})})
    assert upstream.plan(none, "lab", "up0") is None
    far = cfg.bgp.routers[0].model_copy(update={"address": IPv4Address("203.0.113.9")})
    off = cfg.model_copy(update={"bgp": cfg.bgp.model_copy(update={"routers": [far]})})
    with pytest.raises(LabError, match=r"bgp.routers\[0\].address: 203.0.113.9 is not in the upstream subnet"):
        upstream.plan(off, "lab", "up0")
