"""Facts about client networks shared by cluster.toml, the cluster state, the API and the node: device names, the
MTU an underlay allows, and the rules a network's addresses and ACL rules must follow (pure functions).

The cluster.toml checks (checks.py) and the API run the same rules, so a network is refused with the same words
whichever way it comes in. Every rule yields (key path below the network, message).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from pvc.config.schema import Bond, ClusterFile, Nic, Vlan

VXLAN_OVERHEAD = 50  # outer Ethernet + IPv4 + UDP + VXLAN headers: a VXLAN's MTU is the underlay's minus this
DEFAULT_MTU = 1500
MAX_VLAN = 4094
MAX_VNI = 16_777_215
DHCP_LEASE = "1h"  # how long a DHCP lease lasts (dnsmasq's lease time); leases renew at half of it
HOSTNAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
PORTS_RE = re.compile(r"^\d{1,5}(-\d{1,5})?(,\d{1,5}(-\d{1,5})?)*$")

Path = tuple[str | int, ...]
Problem = tuple[Path, str]


BRIDGE_PREFIX = "vmbr"


def gateway_mac(vni: int) -> str:
    """The MAC of a managed network's gateway: the primary's vmbr<N> takes it, whichever node that is, so a VM's ARP
    entry for the gateway stays right when the primary moves (a gratuitous ARP does not cross a VXLAN port with
    neigh_suppress on; EVPN carries the MAC's new place). Locally administered, "pv", then the VNI."""
    return "02:70:76:" + ":".join(f"{b:02x}" for b in vni.to_bytes(3, "big"))


def bridge_mac(vni: int, cluster_ip: str) -> str:
    """The MAC of vmbr<N> on a node that does not hold the gateway: its own, stable, never the gateway's."""
    digest = hashlib.sha256(f"{cluster_ip}/{vni}".encode()).digest()
    return "06:" + ":".join(f"{b:02x}" for b in digest[:5])


def bridge_name(vni: int) -> str:
    """The Linux bridge every node makes for the network with this VNI; VMs' NICs are its ports."""
    return f"{BRIDGE_PREFIX}{vni}"


def vxlan_name(vni: int) -> str:
    """A managed network's VXLAN device (the bridge's uplink)."""
    return f"vxlan{vni}"


def vlan_name(vni: int) -> str:
    """A bridged network's 802.1Q device on [network.bridged] (its VNI is its VLAN id)."""
    return f"vlan{vni}"


def device_mtu(cfg: ClusterFile, device: str) -> int:
    """The MTU cluster.toml gives a declared NIC, bond or VLAN (1500 when it is not declared)."""
    net = cfg.network
    items: list[Nic | Bond | Vlan] = [*net.nics, *net.bonds, *net.vlans]
    for item in items:
        if item.name == device:
            return item.mtu
    return DEFAULT_MTU


def max_mtu(cfg: ClusterFile, net_type: str) -> int:
    """The largest MTU a client network of this type can have on this cluster: the cluster network's MTU less the
    VXLAN headers (managed), or the bridged device's MTU (bridged)."""
    if net_type == "managed":
        cluster = cfg.network.cluster
        return (cluster.mtu or device_mtu(cfg, cluster.device)) - VXLAN_OVERHEAD
    bridged = cfg.network.bridged
    return bridged.mtu if bridged is not None else DEFAULT_MTU


def clamp_mtu(requested: int | None, maximum: int) -> int:
    """A network's MTU: what was asked for, never more than its underlay allows (unset: the most it allows)."""
    return maximum if requested is None else min(requested, maximum)


def parse_ports(text: str) -> list[tuple[int, int]]:
    """ "22", "80,443", "8000-8100" -> [(first, last), ...]; ValueError with the reason."""
    if not PORTS_RE.match(text):
        raise ValueError(f'\'{text}\' is not a port list (like "22", "80,443" or "8000-8100")')
    out = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        lo, hi = int(first), int(last or first)
        if not 1 <= lo <= 65535 or not 1 <= hi <= 65535:
            raise ValueError(f"port {lo if not 1 <= lo <= 65535 else hi} is out of range (1-65535)")
        if lo > hi:
            raise ValueError(f"port range {part} ends before it starts")
        out.append((lo, hi))
    return out


def parse_cidr(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address (a single host) or a subnet, IPv4 or IPv6; ValueError with the reason."""
    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        if "has host bits set" in str(exc):
            net = ipaddress.ip_network(text, strict=False)
            raise ValueError(f"'{text}' has host bits set; the subnet is \"{net}\"") from None
        raise ValueError(f'\'{text}\' is not an IP address or subnet (like "10.0.0.0/24" or "10.0.0.7")') from None


class RuleFields(Protocol):
    @property
    def protocol(self) -> str: ...
    @property
    def source(self) -> str | None: ...
    @property
    def destination(self) -> str | None: ...
    @property
    def ports(self) -> str | None: ...


def rule_problems(rule: RuleFields) -> Iterator[Problem]:
    """What is wrong with one ACL rule (its fields are already of the right types)."""
    families: dict[str, int] = {}
    for key in ("source", "destination"):
        value = getattr(rule, key)
        if value is None:
            continue
        try:
            families[key] = parse_cidr(value).version
        except ValueError as exc:
            yield (key,), str(exc)
    if len(set(families.values())) > 1:
        yield ("destination",), "source and destination must both be IPv4 or both IPv6"
    if rule.ports is not None:
        if rule.protocol not in ("tcp", "udp"):
            yield ("ports",), f'ports need protocol "tcp" or "udp", not "{rule.protocol}"'
        else:
            try:
                parse_ports(rule.ports)
            except ValueError as exc:
                yield ("ports",), str(exc)
    wrong = {"icmp": 6, "icmpv6": 4}.get(rule.protocol)
    for key, version in families.items():
        if version == wrong:
            yield (key,), f'protocol "{rule.protocol}" is IPv{10 - wrong}, but {key} is an IPv{version} address'


class ReservationFields(Protocol):
    @property
    def mac(self) -> str: ...
    @property
    def ip(self) -> ipaddress.IPv4Address: ...
    @property
    def hostname(self) -> str: ...


def inside(
    ip: ipaddress.IPv4Address, subnet: ipaddress.IPv4Network, path: Path, what: str, net_name: str
) -> Iterator[Problem]:
    """`ip` is a host address of `subnet` (not outside it, not its network or broadcast address)."""
    if ip not in subnet:
        yield path, f"{ip} ({what}) is outside the {net_name} subnet {subnet}"
    elif subnet.prefixlen < 31 and ip in (subnet.network_address, subnet.broadcast_address):
        kind = "network" if ip == subnet.network_address else "broadcast"
        yield path, f"{ip} is the {kind} address of {subnet}; use a host address"


def address_problems(
    name: str,
    subnet: ipaddress.IPv4Network,
    gateway: ipaddress.IPv4Address | None,
    dhcp: tuple[ipaddress.IPv4Address, ipaddress.IPv4Address] | None,
    reservations: Sequence[ReservationFields] = (),
    subnet6: ipaddress.IPv6Network | None = None,
    gateway6: ipaddress.IPv6Address | None = None,
) -> Iterator[Problem]:
    """What is wrong with a managed network's addresses: the gateway, the DHCP range and the reservations lie in the
    subnet, the range does not hold the gateway, reservations are unique and the IPv6 gateway is in its subnet."""
    label = f"'{name}'"
    if gateway is not None:
        yield from inside(gateway, subnet, ("gateway",), "the gateway", label)
    if dhcp is not None:
        start, end = dhcp
        for key, ip in (("start", start), ("end", end)):
            yield from inside(ip, subnet, ("dhcp", key), f"the DHCP range {key}", label)
        if start > end:
            yield ("dhcp", "end"), f"DHCP range end {end} is before its start {start}"
        elif gateway is not None and start <= gateway <= end:
            yield ("dhcp",), f"the gateway {gateway} is inside the DHCP range {start}-{end}"
    seen_mac: dict[str, int] = {}
    seen_ip: dict[ipaddress.IPv4Address, int] = {}
    for i, res in enumerate(reservations):
        base: Path = ("reservations", i)
        yield from inside(res.ip, subnet, (*base, "ip"), f"the reservation for {res.mac}", label)
        if gateway is not None and res.ip == gateway:
            yield (*base, "ip"), f"{res.ip} is the gateway; reserve another address"
        if res.mac in seen_mac:
            yield (*base, "mac"), f"{res.mac} is reserved twice (reservations {seen_mac[res.mac]} and {i})"
        if res.ip in seen_ip:
            yield (*base, "ip"), f"{res.ip} is reserved twice (reservations {seen_ip[res.ip]} and {i})"
        seen_mac.setdefault(res.mac, i)
        seen_ip.setdefault(res.ip, i)
    if gateway6 is not None and subnet6 is None:
        yield ("gateway6",), "an IPv6 gateway needs 'subnet6'"
    if subnet6 is not None:
        if subnet6.prefixlen != 64:
            yield ("subnet6",), f"{subnet6}: an IPv6 client subnet is a /64 (SLAAC needs it)"
        if gateway6 is None:
            yield ("gateway6",), "an IPv6 subnet needs 'gateway6'"
        elif gateway6 not in subnet6:
            yield ("gateway6",), f"{gateway6} (the IPv6 gateway) is outside the {label} subnet {subnet6}"


def id_problems(net_type: str, vni: int) -> Iterator[Problem]:
    """A bridged network's VNI is its VLAN id (1-4094); a managed one's a VXLAN id (1-16777215)."""
    if net_type == "bridged" and not 1 <= vni <= MAX_VLAN:
        yield ("vni",), f"a bridged network's VNI is its VLAN id: 1-{MAX_VLAN}, not {vni}"
    elif not 1 <= vni <= MAX_VNI:
        yield ("vni",), f"a VNI is 1-{MAX_VNI}, not {vni}"
