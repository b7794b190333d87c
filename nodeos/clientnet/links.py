"""The client networks' devices on a node (pyroute2): converge the node to the network set.

    bridged:  vlan<N> (802.1Q id N on [network.bridged] device) ─┐
    managed:  vxlan<N> (id N, local <cluster IP>, dstport 4789,   ├─ port of vmbr<N> ─ VMs' NICs
              nolearning; EVPN programs its forwarding table)  ─┘

Every device PVC makes carries the alias ALIAS, and removal only ever touches devices that carry it, so a bridge an
administrator made by hand is never deleted. The VLAN device is made by a `VlanMaker` (a seam: this host's kernel
has no 802.1Q, so component tests stand a veth in for it; `vlan_request` is the exact netlink request).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2.netlink.exceptions import NetlinkError

from pvc.config import networks
from pvc.nodeos.formation.firewall import VXLAN_PORT
from pvc.nodeos.state.models import NetworkRecord

log = logging.getLogger(__name__)

ALIAS = "pvc-client-network"  # IFLA_IFALIAS of every device this module makes
IPR = Any  # a pyroute2 IPRoute (or NetNS): link(), link_lookup(), brport()
VlanMaker = Callable[[IPR, int, str, int], None]  # (ipr, vni, parent device, mtu): make vlan<vni>


@dataclass(frozen=True)
class Underlay:
    """What a node's client networks sit on."""

    cluster_ip: str  # the VXLAN's local address: the VTEP that EVPN advertises (must be the node's cluster IP)
    bridged_device: str | None  # [network.bridged] device, the parent of the VLANs


def vlan_request(parent_index: int, vni: int, mtu: int) -> dict[str, Any]:
    """The netlink request (pyroute2 `link("add", **request)`) for a bridged network's 802.1Q device."""
    return {"ifname": networks.vlan_name(vni), "kind": "vlan", "link": parent_index, "vlan_id": vni, "mtu": mtu}


def make_vlan(ipr: IPR, vni: int, parent: str, mtu: int) -> None:
    found = ipr.link_lookup(ifname=parent)
    if not found:
        raise LinkError(f"bridged network {vni}: no device {parent} ([network.bridged] device)")
    ipr.link("add", **vlan_request(found[0], vni, mtu))


def vxlan_request(vni: int, local: str, mtu: int) -> dict[str, Any]:
    """The netlink request for a managed network's VXLAN device: no multicast group, no learning (EVPN fills its
    forwarding table), the node's cluster IP as VTEP."""
    return {
        "ifname": networks.vxlan_name(vni),
        "kind": "vxlan",
        "vxlan_id": vni,
        "vxlan_local": local,
        "vxlan_port": VXLAN_PORT,
        "vxlan_learning": 0,
        "mtu": mtu,
    }


class LinkError(Exception):
    pass


def _index(ipr: IPR, name: str) -> int | None:
    found = ipr.link_lookup(ifname=name)
    return found[0] if found else None


def _info(ipr: IPR, index: int) -> tuple[str | None, Any, str | None]:
    """(kind, IFLA_INFO_DATA, alias) of a device."""
    link = ipr.link("get", index=index)[0]
    linkinfo = link.get_attr("IFLA_LINKINFO")
    kind = linkinfo.get_attr("IFLA_INFO_KIND") if linkinfo else None
    data = linkinfo.get_attr("IFLA_INFO_DATA") if linkinfo else None
    return kind, data, link.get_attr("IFLA_IFALIAS")


def _vxlan_ok(data: Any, vni: int, local: str) -> bool:
    return (
        data is not None
        and data.get_attr("IFLA_VXLAN_ID") == vni
        and data.get_attr("IFLA_VXLAN_LOCAL") == local
        and data.get_attr("IFLA_VXLAN_PORT") == VXLAN_PORT
        and not data.get_attr("IFLA_VXLAN_LEARNING")
    )


def _sysctl(device: str, key: str, value: str) -> None:
    with contextlib.suppress(OSError):
        Path(f"/proc/sys/net/ipv6/conf/{device}/{key}").write_text(value)


def _ensure_uplink(ipr: IPR, net: NetworkRecord, underlay: Underlay, make_vlan: VlanMaker) -> tuple[int, bool]:
    """The bridge's uplink (vxlan<N> or vlan<N>), made or remade as needed: (index, changed)."""
    if net.type == "managed":
        name = networks.vxlan_name(net.vni)
        index = _index(ipr, name)
        if index is not None:
            kind, data, alias = _info(ipr, index)
            if kind == "vxlan" and _vxlan_ok(data, net.vni, underlay.cluster_ip):
                return index, False
            if alias != ALIAS:
                raise LinkError(f"{name} exists but PVC did not make it; remove it or change the network's VNI")
            ipr.link("del", index=index)
        ipr.link("add", **vxlan_request(net.vni, underlay.cluster_ip, net.mtu))
    else:
        name = networks.vlan_name(net.vni)
        index = _index(ipr, name)
        if index is not None:
            return index, False
        if underlay.bridged_device is None:
            raise LinkError(f"bridged network {net.name} needs [network.bridged] in cluster.toml")
        make_vlan(ipr, net.vni, underlay.bridged_device, net.mtu)
    index = _index(ipr, name)
    if index is None:
        raise LinkError(f"{name} was not created")
    ipr.link("set", index=index, ifalias=ALIAS)
    return index, True


def _ensure_bridge(ipr: IPR, net: NetworkRecord) -> tuple[int, bool]:
    name = networks.bridge_name(net.vni)
    index = _index(ipr, name)
    if index is not None:
        kind, _, _ = _info(ipr, index)
        if kind != "bridge":
            raise LinkError(f"{name} exists and is not a bridge")
        return index, False
    # nf_call_iptables: bridged IPv4/IPv6 traffic passes the inet forward hook, where the network's ACLs are
    ipr.link(
        "add",
        ifname=name,
        kind="bridge",
        br_stp_state=0,
        br_forward_delay=0,
        br_nf_call_iptables=1,
        br_nf_call_ip6tables=1,
    )
    index = _index(ipr, name)
    if index is None:
        raise LinkError(f"{name} was not created")
    ipr.link("set", index=index, ifalias=ALIAS)
    return index, True


def converge_one(ipr: IPR, net: NetworkRecord, underlay: Underlay, make_vlan: VlanMaker = make_vlan) -> list[str]:
    """Make one network's uplink and bridge right: kinds, VXLAN parameters, master, MTU, up. Returns the changes."""
    changes = []
    bridge, made_bridge = _ensure_bridge(ipr, net)
    uplink, made_uplink = _ensure_uplink(ipr, net, underlay, make_vlan)
    if made_bridge:
        changes.append(f"created {networks.bridge_name(net.vni)}")
    if made_uplink:
        changes.append(
            f"created {networks.vxlan_name(net.vni) if net.type == 'managed' else networks.vlan_name(net.vni)}"
        )
    link = ipr.link("get", index=uplink)[0]
    if link.get_attr("IFLA_MASTER") != bridge or link.get_attr("IFLA_MTU") != net.mtu:
        ipr.link("set", index=uplink, master=bridge, mtu=net.mtu)
        changes.append(f"{link.get_attr('IFLA_IFNAME')}: master {networks.bridge_name(net.vni)}, mtu {net.mtu}")
    if net.type == "managed":  # ARP/ND answered from EVPN's table; no flooding to learn MACs over the VXLAN
        ipr.brport("set", index=uplink, neigh_suppress=1, learning=0)
    ipr.link("set", index=uplink, state="up")
    if ipr.link("get", index=bridge)[0].get_attr("IFLA_MTU") != net.mtu:
        ipr.link("set", index=bridge, mtu=net.mtu)
    ipr.link("set", index=bridge, state="up")
    bridge_name = networks.bridge_name(net.vni)
    if net.type == "bridged" or net.subnet6 is None:
        _sysctl(bridge_name, "disable_ipv6", "1")  # the node has no IPv6 address on it
    else:
        _sysctl(bridge_name, "accept_dad", "0")  # the gateway6 moves between nodes
    return changes


def ours(ipr: IPR) -> dict[str, int]:
    """name -> index of every device PVC made for a client network."""
    out = {}
    for link in ipr.get_links():
        if link.get_attr("IFLA_IFALIAS") == ALIAS:
            out[link.get_attr("IFLA_IFNAME")] = link["index"]
    return out


def wanted_names(nets: Iterable[NetworkRecord]) -> set[str]:
    names = set()
    for net in nets:
        names.add(networks.bridge_name(net.vni))
        names.add(networks.vxlan_name(net.vni) if net.type == "managed" else networks.vlan_name(net.vni))
    return names


def converge(
    ipr: IPR, nets: list[NetworkRecord], underlay: Underlay, make_vlan: VlanMaker = make_vlan
) -> tuple[list[str], dict[int, str]]:
    """Converge every network, then remove PVC's devices of networks that are gone. Returns (changes, VNI -> error
    for the networks that could not be made)."""
    changes: list[str] = []
    errors: dict[int, str] = {}
    for net in nets:
        try:
            changes += converge_one(ipr, net, underlay, make_vlan)
        except (LinkError, NetlinkError) as exc:
            errors[net.vni] = str(exc)
    keep = wanted_names(nets)
    for name, index in sorted(ours(ipr).items()):
        if name not in keep:
            with contextlib.suppress(NetlinkError):  # gone meanwhile
                ipr.link("del", index=index)
                changes.append(f"removed {name}")
    return changes, errors
