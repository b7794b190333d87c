"""Client networks, pure parts: cluster.toml rules, records from the config, dnsmasq's command line, bgpd's
configuration (`vtysh --dryrun`), the nftables rendered from ACL rules (`nft -c`), the VLAN's netlink request, the
prefix-list updates, the lease hook's messages and which VMs use a network."""

from __future__ import annotations

import subprocess
import uuid
from pathlib import Path

import pytest

from pvc.api.resources import networks as api_networks
from pvc.api.spec import RequestInvalid
from pvc.config import networks
from pvc.config.load import load_text
from pvc.config.schema import AclRule
from pvc.nodeos.clientnet import bgp, dnsmasq, leasehook, links, netfilter
from pvc.nodeos.formation import frr
from pvc.nodeos.state import networks as state_networks
from pvc.nodeos.state.models import NetworkRecord, Refusal, VmSpec
from tests.harness.cluster import tiny_vm
from tests.harness.examples import example

MANAGED = """
[[client_networks]]
name = "lan"
type = "managed"
vni = 100
subnet = "10.100.0.0/24"
gateway = "10.100.0.1"
subnet6 = "2001:db8:100::/64"
gateway6 = "2001:db8:100::1"
dhcp = { start = "10.100.0.100", end = "10.100.0.199" }
dns = { domain = "lan.example.com", servers = ["192.0.2.53"] }
nat = true
acl_policy = "drop"
reservations = [{ mac = "52:54:00:aa:bb:cc", ip = "10.100.0.10", hostname = "web" }]

[[client_networks.acls]]
description = "ssh-in"
action = "accept"
protocol = "tcp"
ports = "22"
source = "198.51.100.0/24"

[[client_networks.acls]]
description = "no-smtp"
direction = "out"
action = "reject"
protocol = "tcp"
ports = "25,465-587"
order = 1
"""


def cfg_with(extra: str):
    result = load_text(example("lab-3node").read_text() + extra)
    assert result.valid, [p.format("cluster.toml") for p in result.errors]
    return result.config


def errors_of(extra: str) -> list[str]:
    result = load_text(example("lab-3node").read_text() + extra)
    return [f"{p.key}: {p.message}" for p in result.errors]


@pytest.fixture(scope="module")
def cfg():
    return cfg_with(MANAGED)


@pytest.fixture(scope="module")
def lan(cfg) -> NetworkRecord:
    return state_networks.from_config(cfg, cfg.client_networks[-1])


# -- cluster.toml ---------------------------------------------------------------------------------------------------
def test_config_network_becomes_a_config_owned_record_with_a_clamped_mtu(cfg, lan):
    assert lan.owner == "config" and lan.vni == 100 and lan.nat and lan.acl_policy == "drop"
    assert lan.mtu == networks.max_mtu(cfg, "managed") == (cfg.network.cluster.mtu or 1500) - 50
    assert lan.domain == "lan.example.com" and lan.dns_servers == ["192.0.2.53"]
    assert [r.description for r in netfilter.ordered(lan.acls)] == ["no-smtp", "ssh-in"]
    big = cfg_with(MANAGED.replace("vni = 100", "vni = 100\nmtu = 9000"))
    assert state_networks.from_config(big, big.client_networks[-1]).mtu == lan.mtu


@pytest.mark.parametrize(
    ("change", "key", "words"),
    [
        ('ports = "22"\nsource', "client_networks[0].acls[0]", "is not a port list"),
        ('protocol = "tcp"\nports = "22"', "client_networks[0].acls[0]", None),
        ('hostname = "web"', "client_networks[0].reservations[0]", None),
        ('ip = "10.100.0.10"', "client_networks[0].reservations[0].ip", "outside"),
        ('gateway6 = "2001:db8:100::1"', "client_networks[0].gateway6", "outside"),
    ],
)
def test_config_refuses_bad_network_fields(change, key, words):
    bad = {
        'ports = "22"\nsource': 'ports = "22-x"\nsource',
        'protocol = "tcp"\nports = "22"': 'protocol = "icmp"\nports = "22"',
        'hostname = "web"': 'hostname = "Web_1"',
        'ip = "10.100.0.10"': 'ip = "10.200.0.10"',
        'gateway6 = "2001:db8:100::1"': 'gateway6 = "2001:db8:999::1"',
    }[change]
    errors = errors_of(MANAGED.replace(change, bad, 1))
    assert errors and errors[0].startswith(key), errors
    if words:
        assert words in errors[0], errors


def test_a_vlan_id_and_a_vni_may_not_share_a_bridge():
    bridged = '\n[network.bridged]\ndevice = "eth0"\n\n[[client_networks]]\nname = "v"\ntype = "bridged"\nvlan = 100\n'
    errors = errors_of(MANAGED + bridged)
    assert any("client_networks[1].vlan" in e and "100" in e for e in errors), errors


def test_a_bridged_network_takes_no_nat():
    errors = errors_of('\n[[client_networks]]\nname = "v"\ntype = "bridged"\nvlan = 7\nnat = true\n')
    assert any("'nat'" in e for e in errors), errors


# -- dnsmasq ---------------------------------------------------------------------------------------------------------
def test_the_api_takes_a_bridged_network_where_cluster_toml_has_a_bridged_device():
    """POST /networks of a bridged network ran into an AttributeError ('dns' is no NetworkRecord field) on every
    cluster with [network.bridged]; now it passes, and what only a managed network has is refused by its field."""
    cfg = cfg_with('\n[network.bridged]\ndevice = "eth2"\n')
    record = NetworkRecord(vni=100, name="lan", type="bridged", mtu=1500)
    api_networks.check(cfg, record, [])
    for update, field in (
        ({"subnet": "10.1.0.0/24"}, "subnet"),
        ({"domain": "x.invalid"}, "dns"),
        ({"nat": True}, "nat"),
    ):
        with pytest.raises(RequestInvalid) as refused:
            api_networks.check(cfg, record.model_copy(update=update), [])
        assert refused.value.field == field and "takes no" in str(refused.value)


def test_dnsmasq_argv(lan, tmp_path):
    paths = dnsmasq.Paths(tmp_path / "100")
    argv = dnsmasq.argv(lan, paths, "/usr/bin/pvc-lease-hook")
    assert argv[0] == dnsmasq.DNSMASQ
    for arg in (
        "--keep-in-foreground",
        "--interface=vmbr100",
        "--bind-interfaces",
        "--listen-address=10.100.0.1",
        "--domain=lan.example.com",
        "--local=/lan.example.com/",
        "--no-resolv",
        "--server=192.0.2.53",
        f"--dhcp-range=10.100.0.100,10.100.0.199,255.255.255.0,{dnsmasq.LEASE_TIME}",
        "--dhcp-option=option:router,10.100.0.1",
        f"--dhcp-hostsdir={paths.hostsdir}",
        "--leasefile-ro",
        "--dhcp-script=/usr/bin/pvc-lease-hook",
        "--listen-address=2001:db8:100::1",
        "--enable-ra",
        "--dhcp-range=::,constructor:vmbr100,ra-stateless,ra-names",
        f"--dhcp-option=option:mtu,{lan.mtu}",
    ):
        assert arg in argv, arg
    assert dnsmasq.host_files(lan) == {"52-54-00-aa-bb-cc": "52:54:00:aa:bb:cc,10.100.0.10,web\n"}
    # every VM NIC on the network by its VM's name; a reservation keeps its own name (or takes the VM's); a VM
    # name that is no host name is left out
    names = {"52:54:00:AA:BB:CC": "vm0", "52:54:00:00:00:01": "web1", "52:54:00:00:00:02": "not_a_hostname"}
    names |= {"52:54:00:00:00:03": "ignore", "52:54:00:00:00:04": "600", "52:54:00:00:00:05": "5m"}  # dnsmasq words
    assert dnsmasq.host_files(lan, names) == {
        "52-54-00-aa-bb-cc": "52:54:00:aa:bb:cc,10.100.0.10,web\n",
        "52-54-00-00-00-01": "52:54:00:00:00:01,web1\n",
    }
    unnamed = lan.model_copy(update={"reservations": [lan.reservations[0].model_copy(update={"hostname": None})]})
    assert dnsmasq.host_files(unnamed, names)["52-54-00-aa-bb-cc"] == "52:54:00:aa:bb:cc,10.100.0.10,vm0\n"
    no_dhcp = lan.model_copy(update={"dhcp": None})
    assert not any(a.startswith(("--dhcp-range=10.", "--dhcp-script")) for a in dnsmasq.argv(no_dhcp, paths, "h"))


def test_dnsmasq_accepts_the_argv(lan, tmp_path):
    """dnsmasq's own parser (--test) takes the rendered options."""
    argv = dnsmasq.argv(lan, dnsmasq.Paths(tmp_path / "100"), "/bin/true")
    done = subprocess.run([*argv, "--test"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 0 and "syntax check OK" in done.stderr, done.stderr


def test_lease_init_lines_and_hook_messages():
    lines = dnsmasq.init_lines([(1700000000, "52:54:00:00:00:01", "10.100.0.101", "vm1", ""), (0, "m", "i", "", "c")])
    assert lines == "1700000000 52:54:00:00:00:01 10.100.0.101 vm1 *\n0 m i * c\n"
    env = {leasehook.ENV_VNI: "100", "DNSMASQ_LEASE_EXPIRES": "1700000000", "DNSMASQ_CLIENT_ID": "01:52"}
    msg = leasehook.event(["add", "52:54:00:AA:00:01", "10.100.0.101", "vm1"], env)
    assert msg == {
        "action": "add",
        "vni": 100,
        "mac": "52:54:00:aa:00:01",
        "ip": "10.100.0.101",
        "hostname": "vm1",
        "expires": 1700000000,
        "client_id": "01:52",
    }
    assert leasehook.event(["init"], env) == {"action": "init", "vni": 100}
    assert leasehook.main(["tftp", "x"]) == 0


# -- FRR -------------------------------------------------------------------------------------------------------------
def test_frr_conf_with_evpn_passes_vtysh_dry_run(cfg, tmp_path):
    for node in cfg.nodes:
        path = tmp_path / f"{node.name}.conf"
        text = frr.render_conf(cfg, node)
        path.write_text(text + "".join(f"{c}\n" for c in bgp.commands({}, ["10.100.0.0/24", "10.101.0.0/24"])))
        done = subprocess.run(["vtysh", "--dryrun", "--inputfile", str(path)], capture_output=True, text=True)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"bgp router-id {node.router_id or node.ip.cluster}" in text and "advertise-all-vni" in text


def test_prefix_list_updates(lan):
    assert bgp.announced([lan]) == []  # NAT: the routers never see the subnet
    routed = lan.model_copy(update={"nat": False})
    assert bgp.announced([routed]) == ["10.100.0.0/24"]
    running = "ip prefix-list pvc-announce seq 5 permit 10.9.0.0/24\nip prefix-list other seq 5 permit 1.0.0.0/8\n"
    have = bgp.current(running)
    assert have == {"10.9.0.0/24": 5}
    assert bgp.commands(have, ["10.100.0.0/24"]) == [
        "no ip prefix-list pvc-announce seq 5 permit 10.9.0.0/24",
        "ip prefix-list pvc-announce seq 10 permit 10.100.0.0/24",
    ]
    assert bgp.commands({"10.100.0.0/24": 5}, ["10.100.0.0/24"]) == []


# -- nftables --------------------------------------------------------------------------------------------------------
def test_acl_rules_render_and_pass_nft_check(lan, tmp_path):
    text = netfilter.render([lan])
    assert netfilter.check(text, tmp_path) is None, text
    assert 'iifname "vmbr100" ip saddr 10.100.0.0/24 jump net100-out' in text
    assert 'oifname "vmbr100" ip6 daddr 2001:db8:100::/64 jump net100-in' in text
    assert 'ip saddr 198.51.100.0/24 tcp dport { 22 } counter accept comment "ssh-in"' in text
    assert 'tcp dport { 25, 465-587 } counter reject comment "no-smtp"' in text
    out_chain = text.split("chain net100-out {")[1].split("}\n")[0]
    assert out_chain.strip().splitlines()[-1].strip().startswith("counter drop"), "policy drop ends the chain"
    # what VMs send to the node itself: DHCP and DNS marked for the node firewall, the rest dropped
    assert 'iifname "vmbr100" udp dport { 53, 67, 547 } meta mark set meta mark | 0x00100000' in text
    nat = netfilter.render_nat([lan], "ens3", primary=True)
    assert 'oifname "ens3" ip saddr 10.100.0.0/24 counter masquerade' in nat
    assert netfilter.check(nat, tmp_path) is None
    assert "masquerade" not in netfilter.render_nat([lan], "ens3", primary=False)


@pytest.mark.parametrize(
    "rule",
    [
        {"description": "a", "action": "drop"},
        {"description": "b", "action": "accept", "protocol": "icmp", "source": "192.0.2.7"},
        {"description": "c", "action": "reject", "protocol": "udp", "ports": "53", "destination": "2001:db8::/48"},
        {"description": "d", "action": "drop", "protocol": "icmpv6", "direction": "out"},
        {"description": "e", "action": "accept", "protocol": "tcp"},
    ],
)
def test_every_rule_shape_renders(lan, tmp_path, rule):
    net = lan.model_copy(update={"acls": [AclRule.model_validate(rule)]})
    assert netfilter.check(netfilter.render([net]), tmp_path) is None
    netfilter.check_network(net, tmp_path)  # raises if it did not render


@pytest.mark.parametrize(
    ("rule", "field"),
    [
        ({"description": "x", "action": "drop", "ports": "22"}, "ports"),
        ({"description": "x", "action": "drop", "protocol": "tcp", "ports": "0"}, "ports"),
        ({"description": "x", "action": "drop", "source": "10.0.0.1/8"}, "source"),
        ({"description": "x", "action": "drop", "source": "10.0.0.0/8", "destination": "2001:db8::1"}, "destination"),
        ({"description": "x", "action": "drop", "protocol": "icmpv6", "source": "10.0.0.0/8"}, "source"),
    ],
)
def test_rules_that_cannot_render_name_their_field(rule, field):
    from pvc.config.schema import AclFields

    problems = list(networks.rule_problems(AclFields.model_validate(rule)))
    assert problems and problems[0][0] == (field,), problems


# -- links -----------------------------------------------------------------------------------------------------------
class Recorder:
    """Stands in for pyroute2's IPRoute: records the requests (this host's kernel has no 802.1Q)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict]] = []

    def link_lookup(self, ifname: str) -> list[int]:
        return [7] if ifname == "bond0" else []

    def link(self, command: str, **request: object) -> None:
        self.calls.append((command, request))


def test_vlan_netlink_request():
    ipr = Recorder()
    links.make_vlan(ipr, 42, "bond0", 9000)
    assert ipr.calls == [("add", {"ifname": "vlan42", "kind": "vlan", "link": 7, "vlan_id": 42, "mtu": 9000})]
    with pytest.raises(links.LinkError, match="no device eth9"):
        links.make_vlan(ipr, 42, "eth9", 1500)


def test_vxlan_request_has_the_cluster_ip_as_vtep_and_no_learning():
    assert links.vxlan_request(100, "192.0.2.11", 1450) == {
        "ifname": "vxlan100",
        "kind": "vxlan",
        "vxlan_id": 100,
        "vxlan_local": "192.0.2.11",
        "vxlan_port": 4789,
        "vxlan_learning": 0,
        "mtu": 1450,
    }


# -- VMs on a network ------------------------------------------------------------------------------------------------
def test_users_are_the_vms_with_a_nic_on_the_network():
    def vm(name: str, vnis: list[int]) -> VmSpec:
        vm_uuid = str(uuid.uuid5(uuid.NAMESPACE_DNS, name))
        definition = tiny_vm(name, vm_uuid, nics=[{"network": v} for v in vnis])
        return VmSpec(uuid=vm_uuid, name=name, definition=definition, node="n1")

    vms = [vm("a", [100]), vm("b", [1000, 100]), vm("c", [1000]), vm("d", [])]
    assert state_networks.users(100, vms) == ["a", "b"]
    assert state_networks.users(7, vms) == []


def test_a_vm_without_a_definition_uses_the_networks_it_was_defined_with():
    """A VM refused when its XML was typed may still run with that XML: its PVC bridges count, so the network is
    not removed under it; so do the NICs of a stored definition this PVC cannot read."""
    nics = "".join(
        f"<interface type='{kind}'><source {attr}='{name}'/></interface>"
        for kind, attr, name in (
            ("bridge", "bridge", "vmbr100"),
            ("bridge", "bridge", "br0"),
            ("network", "network", "vmbr7"),
        )
    )
    xml = f"<domain type='kvm'><name>old</name><devices>{nics}<hostdev/></devices></domain>"
    refused = VmSpec(
        uuid=str(uuid.uuid4()),
        name="old",
        original_xml=xml,
        refused=[Refusal(path="devices/hostdev", message="no")],
        node="n1",
    )
    raw = {"name": "newer", "memory_mib": 64, "vcpus": 999, "nics": [{"network": 4100}, {"network": "x"}, "y"]}
    unreadable = VmSpec.model_validate({"uuid": str(uuid.uuid4()), "name": "newer", "definition": raw, "node": "n1"})
    broken = VmSpec(uuid=str(uuid.uuid4()), name="broken", original_xml="<domain><devices>", node="n1")
    assert unreadable.definition is None
    assert [state_networks.vm_networks(s) for s in (refused, unreadable, broken)] == [{100}, {4100}, set()]
    assert state_networks.users(100, [refused, unreadable, broken]) == ["old"]
    assert state_networks.users(4100, [refused, unreadable, broken]) == ["newer"]
    assert state_networks.users(7, [refused, unreadable, broken]) == []


def test_record_round_trips_through_zookeeper_encoding(lan):
    from pvc.nodeos.state.store import decode, encode

    assert decode(NetworkRecord, encode(lan)) == lan


def test_docs_describe_networks():
    text = (Path(__file__).resolve().parents[2] / "docs" / "networks.md").read_text()
    for word in ("vmbr", "EVPN", "dnsmasq", "pvc-lease-hook", "masquerade", "acl_policy", "neighbor"):
        assert word in text, word


def test_the_gateway_mac_is_the_networks_and_a_bridge_mac_the_nodes():
    """The primary's vmbr<N> takes the network's gateway MAC wherever the primary is; other nodes' are their own."""
    from pvc.config import networks as facts

    assert facts.gateway_mac(100) == "02:70:76:00:00:64" and facts.gateway_mac(16777215) == "02:70:76:ff:ff:ff"
    mine, other = facts.bridge_mac(100, "192.0.2.11"), facts.bridge_mac(100, "192.0.2.12")
    assert mine != other and mine == facts.bridge_mac(100, "192.0.2.11") and mine != facts.gateway_mac(100)
    assert int(mine.split(":")[0], 16) & 0b11 == 0b10  # locally administered, unicast
