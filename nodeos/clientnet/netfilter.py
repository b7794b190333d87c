"""The client networks' nftables, rendered from the network records (pure functions), checked with `nft -c` and
loaded with `nft -f`. Two tables of PVC's own, beside the node firewall `inet pvc`:

`inet pvc_networks`, on every node:
- chain `forward`: a managed network's bridge passes bridged traffic through the inet forward hook too
  (nf_call_iptables, links.py), so one chain sees both VM-to-VM traffic on a bridge (on each node the frames cross)
  and traffic routed through the gateway (on the primary). Traffic from a network's subnet out of its bridge jumps
  to `net<VNI>-out`, traffic to its subnet into its bridge to `net<VNI>-in`; in those chains the ACL rules run in
  order, then the network's default policy (accept, or drop after what the VMs need from the gateway).
- chain `admit` (hook input, before `filter`): what VMs may send to the node itself (DHCP, DNS, DHCPv6, HTTP to the
  metadata service at 169.254.169.254:80) is marked with the node firewall's ACCEPT_MARK, which `inet pvc` accepts;
  anything else from a client bridge is dropped, so VMs never reach the node's own services.

`ip pvc_nat`, on the primary: masquerade of the subnets with NAT on, out of the upstream device.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from pvc.config import networks
from pvc.config.schema import AclFields
from pvc.nodeos.clientnet import metadata
from pvc.nodeos.formation.firewall import ACCEPT_MARK
from pvc.nodeos.state.models import NetworkRecord

TABLE = "pvc_networks"
NAT_TABLE = "pvc_nat"
NFT = "nft"
DNS_PORT, DHCP_SERVER_PORT, DHCP_CLIENT_PORT, DHCPV6_SERVER_PORT = 53, 67, 68, 547
LAST = 1_000_001  # where a rule without an order goes


class RenderError(ValueError):
    """A rule nftables refused; `field` names the rule's field when it can be told."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def chain_name(vni: int, direction: str) -> str:
    return f"net{vni}-{direction}"


def ordered(rules: Sequence[AclFields]) -> list[AclFields]:
    """Rules in the order they run: by `order` (unset: last), then as given."""
    return [r for _, _, r in sorted((r.order if r.order is not None else LAST, i, r) for i, r in enumerate(rules))]


def _family(rule: AclFields) -> str | None:
    for value in (rule.source, rule.destination):
        if value is not None:
            return "ip6" if networks.parse_cidr(value).version == 6 else "ip"
    return {"icmp": "ip", "icmpv6": "ip6"}.get(rule.protocol)


def rule_text(rule: AclFields) -> str:
    """One ACL rule as an nftables rule (its fields were validated: networks.rule_problems)."""
    family = _family(rule)
    parts = []
    if rule.source is not None:
        parts.append(f"{family} saddr {networks.parse_cidr(rule.source)}")
    if rule.destination is not None:
        parts.append(f"{family} daddr {networks.parse_cidr(rule.destination)}")
    if family is not None and not parts:
        parts.append(f"meta nfproto {'ipv6' if family == 'ip6' else 'ipv4'}")
    if rule.protocol in ("tcp", "udp"):
        if rule.ports is not None:
            ports = [f"{lo}" if lo == hi else f"{lo}-{hi}" for lo, hi in networks.parse_ports(rule.ports)]
            parts.append(f"{rule.protocol} dport {{ {', '.join(ports)} }}")
        else:
            parts.append(f"meta l4proto {rule.protocol}")
    elif rule.protocol == "icmp":
        parts.append("meta l4proto icmp")
    elif rule.protocol == "icmpv6":
        parts.append("meta l4proto ipv6-icmp")
    parts += ["counter", rule.action, f'comment "{rule.description}"']
    return " ".join(parts)


def _gateway_needs(net: NetworkRecord, direction: str) -> list[str]:
    """What VMs exchange with the gateway's dnsmasq (DHCP, DNS, router advertisements)."""
    out = []
    if direction == "out":
        if net.gateway:
            out += [
                f"ip daddr {{ {net.gateway}, 255.255.255.255 }} udp dport {{ {DNS_PORT}, {DHCP_SERVER_PORT} }} accept",
                f"ip daddr {net.gateway} tcp dport {DNS_PORT} accept",
            ]
        if net.gateway6:
            out += [
                f"ip6 daddr {net.gateway6} udp dport {DNS_PORT} accept",
                f"ip6 daddr {net.gateway6} tcp dport {DNS_PORT} accept",
                "meta l4proto ipv6-icmp icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit } accept",
                f"udp dport {DHCPV6_SERVER_PORT} accept",
            ]
    else:
        if net.gateway:
            out.append(f"ip saddr {net.gateway} udp sport {DHCP_SERVER_PORT} udp dport {DHCP_CLIENT_PORT} accept")
        if net.gateway6:
            out.append(
                "meta l4proto ipv6-icmp icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert } accept"
            )
    return out


def network_chains(net: NetworkRecord) -> dict[str, list[str]]:
    """chain name -> rules, for one managed network's ACLs."""
    chains = {}
    for direction in ("in", "out"):
        # what VMs need from the gateway's dnsmasq comes first: no rule can cut a VM off DHCP and DNS
        body = _gateway_needs(net, direction)
        body += [rule_text(r) for r in ordered([r for r in net.acls if r.direction == direction])]
        if net.acl_policy == "drop":
            body.append(f'counter drop comment "policy of network {net.name}"')
        chains[chain_name(net.vni, direction)] = body
    return chains


def _jumps(net: NetworkRecord) -> list[str]:
    bridge = networks.bridge_name(net.vni)
    out = []
    for family, subnet in (("ip", net.subnet), ("ip6", net.subnet6)):
        if subnet is None:
            continue
        out.append(f'iifname "{bridge}" {family} saddr {subnet} jump {chain_name(net.vni, "out")}')
        out.append(f'oifname "{bridge}" {family} daddr {subnet} jump {chain_name(net.vni, "in")}')
    return out


def _admit(nets: Sequence[NetworkRecord]) -> list[str]:
    mark = f"meta mark set meta mark | {ACCEPT_MARK:#010x}"
    out = []
    for net in nets:
        bridge = networks.bridge_name(net.vni)
        out += [
            f'iifname "{bridge}" ct state established,related accept',
            f'iifname "{bridge}" udp dport {{ {DNS_PORT}, {DHCP_SERVER_PORT}, {DHCPV6_SERVER_PORT} }} {mark}',
            f'iifname "{bridge}" tcp dport {DNS_PORT} {mark}',
            f'iifname "{bridge}" ip daddr {metadata.ADDRESS} tcp dport {metadata.PORT} {mark}',
            f'iifname "{bridge}" meta mark & {ACCEPT_MARK:#010x} != {ACCEPT_MARK:#010x} counter drop',
        ]
    return out


def _table(family: str, name: str, chains: dict[str, tuple[str | None, list[str]]]) -> list[str]:
    lines = [f"table {family} {name}", f"delete table {family} {name}", f"table {family} {name} {{"]
    for chain, (hook, body) in chains.items():
        lines.append(f"\tchain {chain} {{")
        if hook:
            lines.append(f"\t\t{hook}")
        lines += [f"\t\t{rule}" for rule in body]
        lines.append("\t}")
    lines.append("}")
    return lines


def render(nets: Sequence[NetworkRecord]) -> str:
    """The whole `inet pvc_networks` table for these networks, replacing any previous one atomically (`nft -f`)."""
    managed = sorted((n for n in nets if n.type == "managed"), key=lambda n: n.vni)
    chains: dict[str, tuple[str | None, list[str]]] = {
        "forward": (
            "type filter hook forward priority filter; policy accept;",
            ["ct state established,related accept", *[j for n in managed for j in _jumps(n)]],
        ),
        "admit": ("type filter hook input priority filter - 10; policy accept;", _admit(managed)),
    }
    for net in managed:
        for name, body in network_chains(net).items():
            chains[name] = (None, body)
    head = ["# PVC client networks (docs/networks.md), rendered by pvcd from the network records. Do not edit."]
    return "\n".join(head + _table("inet", TABLE, chains)) + "\n"


def render_nat(nets: Sequence[NetworkRecord], upstream_device: str, primary: bool) -> str:
    """`ip pvc_nat`: on the primary, masquerade every NAT network's subnet out of the upstream device; elsewhere
    (or with no NAT network) no table at all."""
    nat = sorted((n for n in nets if n.type == "managed" and n.nat and n.subnet), key=lambda n: n.vni)
    if not primary or not nat:
        return f"table ip {NAT_TABLE}\ndelete table ip {NAT_TABLE}\n"
    rules = [f'oifname "{upstream_device}" ip saddr {n.subnet} counter masquerade comment "{n.name}"' for n in nat]
    hook = "type nat hook postrouting priority srcnat; policy accept;"
    return "\n".join(_table("ip", NAT_TABLE, {"postrouting": (hook, rules)})) + "\n"


def check(text: str, workdir: Path) -> str | None:
    """nftables' complaint about a ruleset (`nft -c`: parsed and checked by the kernel, nothing applied)."""
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "check.nft"
    path.write_text(text)
    done = subprocess.run([NFT, "-c", "-f", str(path)], capture_output=True, text=True, timeout=30)
    return None if done.returncode == 0 else (done.stderr.strip() or f"nft -c exited {done.returncode}")


def apply(text: str, path: Path) -> None:
    """Check, then load a ruleset (nft -f is atomic: the old table stays until the new one is in)."""
    problem = check(text, path.parent)
    if problem:
        raise RenderError(problem)
    path.write_text(text)
    done = subprocess.run([NFT, "-f", str(path)], capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise RenderError(done.stderr.strip() or f"nft -f exited {done.returncode}")


def check_network(net: NetworkRecord, workdir: Path) -> None:
    """Raise RenderError naming the rule whose rendering nftables refuses (the API's check before it stores)."""
    problem = check(render([net]), workdir)
    if problem is None:
        return
    for rule in net.acls:
        if rule.description in problem:
            raise RenderError(f"ACL '{rule.description}' does not render: {problem}", "acls")
    raise RenderError(f"the network's rules do not render: {problem}", "acls")
