"""Client networks for real: three simulated nodes (namespaces) with real pvcd, FRR (zebra + bgpd, EVPN), nftables,
VXLAN and ZooKeeper, and one managed network from cluster.toml. Guest namespaces plugged into the nodes' vmbr100
get DHCP leases from the primary's dnsmasq, reach each other across nodes through the VXLAN that EVPN programmed,
are blocked by an ACL drop rule and released when it goes, reach the "upstream" (the switch namespace) masqueraded
to the primary's address, and keep their leases when the primary (and so dnsmasq) moves to another node. A guest
with a static address reads its VM's documents from the metadata service at 169.254.169.254, before and after the
primary moves; a MAC that is no VM's gets 404, and the upstream cannot reach the service. An upstream router (the
lab's bgpd, in the switch namespace) learns the subnet without NAT from the primary alone. A VM's NIC gets its VM's
name in DHCP, whatever name the guest sends.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import pytest

from pvc.config import networks
from pvc.config.schema import AclFields
from pvc.installer.lab import upstream as labrouter
from pvc.nodeos.state.models import NetworkRecord, VmSeed
from tests.harness.cluster import CLUSTER, ROOT, UPSTREAM, RuntimeCluster
from tests.harness.netlab import kill_all_in
from tests.harness.ports import NS_PREFIX, RUNTIME_ZK_PORT
from tests.harness.procs import Proc, wait_until

VNI, SUBNET = 100, "10.100.0.0/24"
NETWORK = f"""
[[client_networks]]
name = "lan"
type = "managed"
vni = {VNI}
subnet = "{SUBNET}"
gateway = "10.100.0.1"
dhcp = {{ start = "10.100.0.100", end = "10.100.0.199" }}
nat = true
[[bgp.routers]]
address = "{UPSTREAM.prefix}.254"
asn = 65501
"""

SERVE = """
import socket, sys
s = socket.create_server(("0.0.0.0", int(sys.argv[1])), reuse_port=True)
print("listening", flush=True)
while True:
    c, peer = s.accept()
    c.sendall(peer[0].encode()); c.close()
"""

CONNECT = """
import socket, sys
try:
    c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=float(sys.argv[3]))
    print(c.recv(100).decode() or "closed")
except OSError as exc:
    print(f"failed: {type(exc).__name__}")
"""


FETCH = """
import json, sys, urllib.error, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
try:
    with opener.open(sys.argv[1], timeout=float(sys.argv[2])) as r:
        print(json.dumps([r.status, r.read().decode()]))
except urllib.error.HTTPError as exc:
    print(json.dumps([exc.code, exc.read().decode()]))
except OSError as exc:
    print(json.dumps([0, type(exc).__name__]))
"""
METADATA = "http://169.254.169.254"
USERDATA = "#cloud-config\nruncmd: [touch /var/tmp/meta1]\n"


def ns_run(ns: str, *argv: str, timeout: float = 60) -> str:
    done = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    assert done.returncode == 0, f"{argv} in {ns}: {done.stdout}{done.stderr}"
    return done.stdout


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


@pytest.fixture
def netcluster(workdir, libvirt_cache):
    root = Path(tempfile.mkdtemp(prefix="nw", dir=workdir))
    root.chmod(0o711)  # dnsmasq, as nobody, reads its hosts folder below
    cluster = RuntimeCluster(
        root,
        ["n1", "n2", "n3"],
        prefix=NS_PREFIX,
        zk_host_port=RUNTIME_ZK_PORT,
        frr=True,
        fencing=False,
        extra=NETWORK,
    )
    guests: list[str] = []
    try:
        cluster.up(libvirt_cache)
        yield cluster, guests
    finally:
        kill_all_in(cluster.lab.switch)  # the upstream router's zebra and bgpd, when the test started them
        for guest in guests:
            kill_all_in(guest)
            subprocess.run(["ip", "netns", "del", guest], capture_output=True)
        cluster.down()


def guest(cluster: RuntimeCluster, guests: list[str], node: str, name: str, mac: str, prefix: str = NS_PREFIX) -> str:
    """A namespace `<prefix><name>` with eth0 plugged into the node's vmbr100: a stand-in VM."""
    ns = f"{prefix}{name}"
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)  # one left by an interrupted run
    ip("netns", "add", ns)
    guests.append(ns)
    ip("-n", ns, "link", "set", "lo", "up")
    port = f"tap{name}"
    ip(
        "link",
        "add",
        "eth0",
        "netns",
        ns,
        "address",
        mac,
        "type",
        "veth",
        "peer",
        "name",
        port,
        "netns",
        cluster.lab.ns(node),
    )
    ip("-n", ns, "link", "set", "eth0", "mtu", "1450", "up")
    ip("-n", cluster.lab.ns(node), "link", "set", port, "master", f"vmbr{VNI}", "up")
    return ns


def dhcp(ns: str, hostname: str) -> dict:
    return json.loads(ns_run(ns, sys.executable, "-m", "tests.harness.dhcp", "eth0", hostname, timeout=90))


def fetch(ns: str, url: str, timeout: float = 3) -> tuple[int, str]:
    """GET `url` from a namespace: (status, body); (0, the error's name) when no HTTP answer came."""
    status, body = json.loads(ns_run(ns, sys.executable, "-c", FETCH, url, str(timeout)))
    return status, body


def connect(ns: str, host: str, port: int, timeout: float = 3) -> str:
    return ns_run(ns, sys.executable, "-c", CONNECT, host, str(port), str(timeout)).strip()


def has_link(cluster: RuntimeCluster, node: str, name: str) -> bool:
    return subprocess.run(["ip", "-n", cluster.lab.ns(node), "link", "show", name], capture_output=True).returncode == 0


def evpn_established(cluster: RuntimeCluster, node: str) -> bool:
    out = subprocess.run(
        ["vtysh", "-N", cluster.lab.ns(node), "-c", "show bgp l2vpn evpn summary json"],
        capture_output=True,
        text=True,
        timeout=20,
    ).stdout
    peers = json.loads(out or "{}").get("peers", {})
    return len(peers) == len(cluster.nodes) - 1 and all(p.get("state") == "Established" for p in peers.values())


def test_managed_network_end_to_end(netcluster, tmp_path):
    cluster, guests = netcluster
    state = cluster.state
    # the primary made the config's network a record; every node made its bridge and VXLAN
    net = wait_until("the config's network in ZooKeeper", lambda: state.networks(), 30)[0]
    assert net.owner == "config" and net.vni == VNI and net.mtu == 1450
    for node in cluster.nodes:
        wait_until(f"vmbr{VNI} + vxlan{VNI} on {node}", partial(has_link, cluster, node, f"vxlan{VNI}"), 30)
        wait_until(f"EVPN sessions of {node}", partial(evpn_established, cluster, node), 60)
    primary = state.primary()
    others = [n for n in cluster.nodes if n != primary]

    # guests on two nodes other than the primary: DHCP crosses the VXLAN to the primary's dnsmasq
    g1 = guest(cluster, guests, others[0], "g1", "52:54:00:00:01:01")
    g2 = guest(cluster, guests, others[1], "g2", "52:54:00:00:01:02")
    lease1, lease2 = dhcp(g1, "guest1"), dhcp(g2, "guest2")
    for got in (lease1, lease2):
        assert got["router"] == "10.100.0.1" and got["dns"] == "10.100.0.1"
        assert 100 <= int(got["ip"].rsplit(".", 1)[1]) <= 199, got
    stored = wait_until("both leases in ZooKeeper", lambda: len(state.leases(VNI)) == 2 and state.leases(VNI), 20)
    assert {(ls.mac, ls.ip, ls.hostname) for ls in stored} == {
        ("52:54:00:00:01:01", lease1["ip"], "guest1"),
        ("52:54:00:00:01:02", lease2["ip"], "guest2"),
    }

    # guest to guest over TCP, through the VXLAN EVPN programmed
    server = Proc("g2-listener", ["ip", "netns", "exec", g2, sys.executable, "-c", SERVE, "7000"], tmp_path / "g2.log")
    try:
        wait_until("g2's listener", lambda: "listening" in (tmp_path / "g2.log").read_text(), 10)
        assert wait_until("g1 reaches g2", lambda: connect(g1, lease2["ip"], 7000) == lease1["ip"], 30)

        # an ACL drop rule blocks the port; removing it restores it
        rule = AclFields(description="no-7000", action="drop", protocol="tcp", ports="7000")
        state.update_network(VNI, lambda r: r.model_copy(update={"acls": [rule]}))
        wait_until("the drop rule to block", lambda: connect(g1, lease2["ip"], 7000, 1).startswith("failed"), 30)
        state.update_network(VNI, lambda r: r.model_copy(update={"acls": []}))
        assert wait_until("the port to open again", lambda: connect(g1, lease2["ip"], 7000) == lease1["ip"], 30)
    finally:
        server.stop()

    # the metadata service: a stand-in VM with a static address (no lease) gets its own VM's documents, found by its
    # MAC; a MAC no VM holds gets 404; the upstream cannot reach the service at all
    g3 = guest(cluster, guests, others[1], "g3", "52:54:00:00:01:03")
    ns_run(g3, "ip", "addr", "add", "10.100.0.50/24", "dev", "eth0")
    ns_run(g3, "ip", "route", "add", "default", "via", "10.100.0.1")
    meta1 = cluster.define("meta1", node=others[1], nics=[{"network": VNI, "mac": "52:54:00:00:01:03"}])
    state.put_vm_seed(meta1.uuid, VmSeed(meta_data={"instance-id": meta1.uuid, "local-hostname": "meta1"},
                                         user_data=USERDATA, profile="web"))  # fmt: skip
    assert wait_until("meta1's hostname", lambda: fetch(g3, f"{METADATA}/latest/meta-data/hostname")[0] == 200, 30)
    assert fetch(g3, f"{METADATA}/latest/meta-data/hostname") == (200, "meta1")
    assert fetch(g3, f"{METADATA}/latest/meta-data/local-ipv4") == (200, "10.100.0.50")
    assert fetch(g3, f"{METADATA}/latest/user-data") == (200, USERDATA)
    assert f"instance-id: {meta1.uuid}" in fetch(g3, f"{METADATA}/nocloud/meta-data")[1]
    assert fetch(g1, f"{METADATA}/latest/meta-data/hostname")[0] == 404  # its MAC is no VM's
    ip("-n", cluster.lab.switch, "route", "replace", "169.254.169.254/32", "via",
       f"{UPSTREAM.prefix}.{cluster.host_id(primary)}")  # fmt: skip
    assert fetch(cluster.lab.switch, f"{METADATA}/latest/meta-data/hostname", 2)[0] == 0  # bound to the bridges

    # NAT: the upstream (the switch namespace) sees the primary's upstream address
    upstream = Proc(
        "upstream-listener",
        ["ip", "netns", "exec", cluster.lab.switch, sys.executable, "-c", SERVE, "7100"],
        tmp_path / "up.log",
    )
    try:
        wait_until("the upstream listener", lambda: "listening" in (tmp_path / "up.log").read_text(), 10)
        world = f"{UPSTREAM.prefix}.254"
        primary_ip = f"{UPSTREAM.prefix}.{cluster.host_id(primary)}"
        assert wait_until("g1 reaches the upstream through NAT", lambda: connect(g1, world, 7100) == primary_ip, 30)
        assert wait_until("g2 reaches the upstream through NAT", lambda: connect(g2, world, 7100) == primary_ip, 30)

        # the primary moves: the gateway, NAT and dnsmasq follow, and the leases survive
        new = others[0]
        state.request_primary(new)
        wait_until(f"{new} to be the primary", lambda: state.primary() == new, 60)
        new_ip = f"{UPSTREAM.prefix}.{cluster.host_id(new)}"
        assert wait_until("NAT from the new primary", lambda: connect(g1, world, 7100) == new_ip, 30)
        # g2 is on a third node: its ARP entry for the gateway stays right, as the gateway's MAC moved with it (a
        # gratuitous ARP does not cross the VXLAN; a stale entry would take about a minute to expire)
        assert wait_until("NAT from the new primary for g2", lambda: connect(g2, world, 7100) == new_ip, 30)
        gateway_mac = networks.gateway_mac(VNI)
        assert cluster.lab.link_address(new, f"vmbr{VNI}") == gateway_mac
        assert cluster.lab.link_address(primary, f"vmbr{VNI}") == networks.bridge_mac(
            VNI, str(cluster.cfg.node(primary).ip.cluster)
        )
        again = dhcp(g2, "guest2")
        assert again["ip"] == lease2["ip"], (again, lease2)
        # the metadata service moved with the primary
        assert "169.254.169.254" in cluster.lab.addresses(new, f"vmbr{VNI}")
        gone = lambda: "169.254.169.254" not in cluster.lab.addresses(primary, f"vmbr{VNI}")  # noqa: E731
        assert wait_until("the old primary to drop the metadata address", gone, 10)
        assert fetch(g3, f"{METADATA}/latest/meta-data/hostname") == (200, "meta1")

        # a VM's NIC is named after its VM in DHCP (and so in DNS), whatever name the guest sends
        cluster.define("vmtwo", node=others[1], nics=[{"network": VNI, "mac": "52:54:00:00:01:02"}])

        def named_after_its_vm() -> bool:
            dhcp(g2, "guest2")
            return any(ls.mac == "52:54:00:00:01:02" and ls.hostname == "vmtwo" for ls in state.leases(VNI))

        assert wait_until("g2's lease named after its VM", named_after_its_vm, 30)
    finally:
        upstream.stop()

    # BGP without NAT: the upstream router learns the subnet with the primary as its one next hop (the other nodes,
    # which learn it from the primary over the fabric, never pass it on)
    router = labrouter.RouterPlan(
        router_ns=cluster.lab.switch,
        world_ns="",
        address=world,
        prefixlen=24,
        asn=65501,
        cluster_asn=cluster.cfg.bgp.asn,
        peers=[f"{UPSTREAM.prefix}.{cluster.host_id(n)}" for n in cluster.nodes],
        lab_bridge="",
    )
    labrouter.start_frr(router, tmp_path / "router.log", labrouter.record(router))
    state.update_network(VNI, lambda r: r.model_copy(update={"nat": False}))
    learned = wait_until("the router learning the subnet", lambda: labrouter.learned(router.router_ns).get(SUBNET), 60)
    settle = time.monotonic() + 3  # the other nodes would re-export within a second of the primary's announcement
    while time.monotonic() < settle:
        assert learned == [new_ip], learned
        time.sleep(0.5)
        learned = labrouter.learned(router.router_ns).get(SUBNET)
    assert CLUSTER.prefix  # the cluster network carried the VXLAN (192.0.2.0/24)


def test_network_record_shapes(state):
    """The state layer: create, name clash, update, leases under the network, removal with them."""
    from pvc.nodeos.state.models import Lease
    from pvc.nodeos.state.store import Conflict

    record = NetworkRecord(vni=7, name="a", type="managed", mtu=1450, subnet="10.7.0.0/24", gateway="10.7.0.1")
    state.create_network(record)
    with pytest.raises(Conflict, match="VNI 7"):
        state.create_network(record.model_copy(update={"created": 1.0}))
    with pytest.raises(Conflict, match="named 'a'"):
        state.create_network(record.model_copy(update={"vni": 8}))
    state.put_lease(7, Lease(mac="52:54:00:00:00:07", ip="10.7.0.100", hostname="x", expires=5))
    assert [ls.ip for ls in state.leases(7)] == ["10.7.0.100"]
    assert state.update_network(7, lambda r: r.model_copy(update={"nat": True})).nat
    state.remove_network(7)
    assert state.networks() == [] and state.leases(7) == []
    state.put_lease(7, Lease(mac="52:54:00:00:00:07", ip="10.7.0.100"))  # for a removed network: dropped
    assert state.network_vnis() == []


def test_links_converge_bridged_and_managed_and_remove_only_their_own():
    """pvcd's device convergence in a namespace: a bridged network's vlan<N> (a veth stands in: this kernel has no
    802.1Q) and a managed network's VXLAN, ports of their bridges; a changed VTEP remakes the VXLAN; removal deletes
    PVC's devices and leaves a bridge made by hand."""
    from pyroute2 import NetNS, netns

    from pvc.nodeos.clientnet import links

    name = f"{NS_PREFIX}lk"
    subprocess.run(["ip", "netns", "del", name], capture_output=True)
    netns.create(name)
    made: list[tuple[int, str, int]] = []

    def veth_vlan(ipr, vni: int, parent: str, mtu: int) -> None:
        made.append((vni, parent, mtu))
        ipr.link("add", ifname=f"vlan{vni}", kind="veth", peer={"ifname": f"peer{vni}"}, mtu=mtu)

    try:
        with NetNS(name) as ipr:
            ipr.link("add", ifname="mine", kind="bridge")
            bridged = NetworkRecord(vni=42, name="b", type="bridged", mtu=1500)
            managed = NetworkRecord(
                vni=100, name="m", type="managed", mtu=1450, subnet="10.1.0.0/24", gateway="10.1.0.1"
            )
            underlay = links.Underlay(cluster_ip="192.0.2.11", bridged_device="bond0")
            changes, errors = links.converge(ipr, [bridged, managed], underlay, veth_vlan)
            assert errors == {} and made == [(42, "bond0", 1500)]
            assert {"created vmbr42", "created vlan42", "created vmbr100", "created vxlan100"} <= set(changes)
            index = {n: ipr.link_lookup(ifname=n)[0] for n in ("vmbr42", "vlan42", "vmbr100", "vxlan100")}
            assert ipr.link("get", index=index["vlan42"])[0].get_attr("IFLA_MASTER") == index["vmbr42"]
            vx = ipr.link("get", index=index["vxlan100"])[0]
            assert vx.get_attr("IFLA_MASTER") == index["vmbr100"] and vx.get_attr("IFLA_MTU") == 1450
            assert links.converge(ipr, [bridged, managed], underlay, veth_vlan)[0] == []  # nothing left to do
            moved = links.Underlay(cluster_ip="192.0.2.99", bridged_device="bond0")
            assert "created vxlan100" in links.converge(ipr, [bridged, managed], moved, veth_vlan)[0]
            data = ipr.link("get", ifname="vxlan100")[0].get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
            assert data.get_attr("IFLA_VXLAN_LOCAL") == "192.0.2.99"
            changes, _ = links.converge(ipr, [], moved, veth_vlan)
            assert sorted(changes) == ["removed vlan42", "removed vmbr100", "removed vmbr42", "removed vxlan100"]
            assert ipr.link_lookup(ifname="mine") and not ipr.link_lookup(ifname="vmbr42")
    finally:
        netns.remove(name)


FLOOD = """
import socket, sys, time
address, count = "169.254.169.254", int(sys.argv[1])
idle = [socket.create_connection((address, 80), timeout=5) for _ in range(count)]
time.sleep(0.3)
extra = socket.create_connection((address, 80), timeout=5)
extra.sendall(b"GET /latest/meta-data/hostname HTTP/1.0\\r\\n\\r\\n")
refused = extra.recv(100) == b""  # closed unanswered: every slot of this address is taken
idle.pop().close()
time.sleep(0.3)
again = socket.create_connection((address, 80), timeout=5)
again.sendall(b"GET /latest/meta-data/hostname HTTP/1.0\\r\\n\\r\\n")
served = again.recv(100).split(b"\\r\\n")[0].decode()
for c in idle:
    c.close()
trickle = socket.create_connection((address, 80), timeout=5)  # a byte at a time, never a whole request
started, cut = time.monotonic(), None
for byte in b"GET /latest/meta-data/hostname":
    try:
        trickle.sendall(bytes([byte]))
    except OSError:
        cut = time.monotonic() - started
        break
    time.sleep(0.2)
if cut is None:
    cut = time.monotonic() - started if trickle.recv(100) == b"" else -1
print(refused, served, round(cut, 1))
"""


def test_metadata_listener_serves_its_bridge_only_and_bounds_its_requests(state):
    """The listener on a bridge in a namespace: a caller whose MAC is no VM's gets 404; with every request slot of
    its address held by idle connections, one more is closed unanswered, and served again once a slot is free; a
    connection trickling a byte at a time is cut at its deadline."""
    from pyroute2 import netns as pynetns

    from pvc.nodeos.daemon import metadata as service

    node, vm = f"{NS_PREFIX}md", f"{NS_PREFIX}mdg"
    for name in (node, vm):
        subprocess.run(["ip", "netns", "del", name], capture_output=True)
        ip("netns", "add", name)
        ip("-n", name, "link", "set", "lo", "up")
    svc = None
    try:
        ip("-n", node, "link", "add", "vmbr9", "type", "bridge")
        ip("-n", node, "link", "add", "p0", "type", "veth", "peer", "name", "eth0", "netns", vm)
        ip("-n", node, "link", "set", "p0", "master", "vmbr9", "up")
        ip("-n", node, "link", "set", "vmbr9", "up")
        ip("-n", node, "addr", "add", "10.9.0.1/24", "dev", "vmbr9")
        ip("-n", node, "addr", "add", "169.254.169.254/32", "dev", "vmbr9")
        ip("-n", vm, "addr", "add", "10.9.0.2/24", "dev", "eth0")
        ip("-n", vm, "link", "set", "eth0", "up")
        ip("-n", vm, "route", "add", "default", "via", "10.9.0.1")
        pynetns.pushns(node)  # the listener's socket and threads are made in the node's namespace
        try:
            svc = service.MetadataService(state)
            assert svc.converge({"vmbr9": 9}) == ["metadata service on vmbr9 (169.254.169.254:80)"]
        finally:
            pynetns.popns()
        assert wait_until("the listener", lambda: fetch(vm, f"{METADATA}/latest/meta-data/hostname")[0] == 404, 10)
        svc.listeners["vmbr9"].deadline = 1.0  # the trickling connection is cut after a second (10 s in use)
        out = ns_run(vm, sys.executable, "-c", FLOOD, str(service.MAX_PER_SOURCE)).split()
        refused, protocol, status, cut = out[0], out[1], out[2], out[-1]  # the status line's reason is in between
        assert (refused, protocol, status) == ("True", "HTTP/1.0", "404")
        assert 0.9 <= float(cut) <= 3.0, cut  # cut at its deadline, not when it finished sending
        assert svc.converge({}) == ["stopped the metadata service on vmbr9"]
        assert fetch(vm, f"{METADATA}/latest/meta-data/hostname", 2)[0] == 0
    finally:
        if svc is not None:
            svc.stop()
        for name in (vm, node):
            kill_all_in(name)
            subprocess.run(["ip", "netns", "del", name], capture_output=True)
