"""The lab's private network: one namespace holding a bridge per cluster network (the lab's "switches"), the
upstream gateway address and the BMC addresses; one namespace per node, with veth NICs named as cluster.toml says.

Every address the lab uses lives inside namespaces it creates; nothing is added to the host's own interfaces.
"""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import dataclass

from pvc.config.schema import ClusterFile, Node
from pvc.installer.lab.command import LabError, ip, sh
from pvc.installer.lab.state import Nic


def node_ns(lab_ns: str, node: str) -> str:
    return f"{lab_ns}-{node}"


@dataclass(frozen=True)
class NetworkPlan:
    """Plain data: what the lab's network looks like for a config."""

    lab_ns: str
    bridges: dict[str, str]  # network role (upstream, cluster, storage, spare) -> bridge name
    host_addresses: dict[str, list[str]]  # bridge -> CIDRs held in the lab namespace (gateway, BMCs)
    nics: dict[str, list[Nic]]  # node -> its NICs in order

    def node_ns(self, node: str) -> str:
        return node_ns(self.lab_ns, node)


def derived_mac(node: str, nic: str) -> str:
    digest = hashlib.sha256(f"{node}/{nic}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


def plan(cfg: ClusterFile, lab_ns: str) -> NetworkPlan:
    net = cfg.network
    roles = {"upstream": net.upstream, "cluster": net.cluster}
    if net.storage is not None:
        roles["storage"] = net.storage
    bridges = {role: f"{role[:2]}0" for role in roles} | {"spare": "xt0"}
    device_role = {core.device: role for role, core in roles.items()}
    up_prefix = ipaddress.ip_network(str(net.upstream.subnet)).prefixlen
    host = {bridges["upstream"]: [f"{net.upstream.gateway}/{up_prefix}"]}
    for node in cfg.nodes:
        if node.ipmi is not None:
            host[bridges["upstream"]].append(f"{node.ipmi.address}/{up_prefix}")
    nic_names = [n.name for n in net.nics] or sorted(device_role)
    nics: dict[str, list[Nic]] = {}
    for node in cfg.nodes:
        out = []
        for i, nic in enumerate(nic_names):
            mac = node.macs[i] if i < len(node.macs) else derived_mac(node.name, nic)
            out.append(Nic(name=nic, bridge=bridges[device_role.get(nic, "spare")], mac=mac.lower()))
        nics[node.name] = out
    return NetworkPlan(lab_ns=lab_ns, bridges=bridges, host_addresses=host, nics=nics)


def forward(ns: str) -> None:
    """IPv4 forwarding on in a namespace the lab made."""
    sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv4.ip_forward=1")


def tap_name(node_id: int, index: int) -> str:
    return f"t{node_id}e{index}"


def create(p: NetworkPlan, nodes: list[Node], taps: bool = False) -> None:
    """The switch namespace with its bridges, and per node either a namespace with veth NICs (container backend)
    or, with `taps`, tap devices on the bridges for QEMU to open (vm backend; QEMU runs in the switch namespace)."""
    existing = set(ip("netns", "list").stdout.split())
    if p.lab_ns in existing:
        raise LabError(
            f"network namespace {p.lab_ns} already exists: a lab is up (pvc-lab down) or left over (ip netns del {p.lab_ns})"
        )
    ip("netns", "add", p.lab_ns)
    ns = ["-n", p.lab_ns]
    ip(*ns, "link", "set", "lo", "up")
    for bridge in p.bridges.values():
        ip(*ns, "link", "add", bridge, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        ip(*ns, "link", "set", bridge, "up")
    for bridge, addrs in p.host_addresses.items():
        for addr in addrs:
            ip(*ns, "addr", "add", addr, "dev", bridge)
    for node in nodes:
        if taps:
            for i, nic in enumerate(p.nics[node.name]):
                ip(*ns, "tuntap", "add", tap_name(node.id, i), "mode", "tap")
                ip(*ns, "link", "set", tap_name(node.id, i), "master", nic.bridge, "up")
            continue
        nns = p.node_ns(node.name)
        ip("netns", "add", nns)
        ip("-n", nns, "link", "set", "lo", "up")
        # nspawn mounts the node's /proc/sys read-only, so pvcd cannot turn on the primary's forwarding for the
        # client networks: every container node forwards from the start (a real server's pvcd does it itself)
        forward(nns)
        for i, nic in enumerate(p.nics[node.name]):
            port = f"n{node.id}e{i}"
            ip(*ns, "link", "add", port, "type", "veth", "peer", "name", nic.name, "netns", nns)
            ip("-n", nns, "link", "set", nic.name, "address", nic.mac)
            ip(*ns, "link", "set", port, "master", nic.bridge, "up")


def destroy(lab_ns: str, node_names: list[str]) -> None:
    for name in node_names:
        ip("netns", "del", node_ns(lab_ns, name), check=False)
    ip("netns", "del", lab_ns, check=False)
