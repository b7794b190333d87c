"""The node firewall: one nftables table, `inet pvc`, rendered from cluster.toml for one node (pure functions), and
the formation step that loads it before any service starts (docs/security.md).

The table is PVC's own: it never flushes the ruleset, so other tables (the networks feature's per-network tables)
live beside it. Its input chain drops by default; what it accepts:

- loopback, established/related traffic, ICMP/ICMPv6 essentials and DHCP client replies;
- a packet another PVC table has already accepted and marked with ACCEPT_MARK (see below);
- each service of SERVICES that runs on this node, from its allowed sources only: the cluster's own node addresses
  (exact IPs, never the subnet) on the network the service uses, the upstream network for the API, the admin
  networks for SSH, the [bgp] routers for BGP, and the extra sources of cluster.toml's [firewall].

nftables evaluates every table's input chain, and a drop in any of them is final: a later table cannot accept what
this one drops. So another PVC table that admits traffic (a managed network's DHCP and DNS, for instance) does it
by setting the packet mark bit ACCEPT_MARK in a chain of a lower priority than `filter`, and this table accepts it.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Literal

from pvc.config.schema import ClusterFile, Node
from pvc.nodeos.formation import ceph, frr, libvirt, zookeeper
from pvc.nodeos.formation.machinery import Context, StepFailed, run, write

TABLE = "pvc"
RULESET_PATH = "/etc/pvc/firewall.nft"
ACCEPT_MARK = 0x00100000  # the one mark bit other PVC tables set on what they admit
SSH_PORT = 22  # sshd's default, which the image keeps
VXLAN_PORT = 4789  # IANA's VXLAN port, Linux's default for managed client networks
DHCP_SERVER_PORT, DHCP_CLIENT_PORT = 67, 68

Sources = Literal["nodes", "coordinators", "upstream", "admin", "routers", "any"]
Network = Literal["cluster", "storage", "upstream", "any"]


@dataclass(frozen=True)
class Service:
    """One port (or range) a node accepts, from whom and on which network. The ports table of docs/security.md is
    rendered from the same list (`ports_table`)."""

    name: str
    proto: Literal["tcp", "udp"]
    ports: tuple[int, int]  # first, last
    on: Literal["all", "coordinators"]  # which nodes run it
    sources: Sources
    network: Network  # where the allowed sources arrive: the interface of that network ("any": no restriction)
    port_from: str  # where the port number comes from (a cluster.toml key or the module that fixes it)
    extra: str | None = None  # the [firewall] key that adds sources
    sport: int | None = None  # a source port to match as well (DHCP replies)


def _one(port: int) -> tuple[int, int]:
    return (port, port)


def services(cfg: ClusterFile) -> list[Service]:
    """Every service port of a PVC node. Ports come from the config and from the renderers that set them."""
    zk, pt, api = cfg.zookeeper, cfg.patroni, cfg.api
    return [
        Service("ssh", "tcp", _one(SSH_PORT), "all", "admin", "any", "sshd default", "ssh"),
        Service("api", "tcp", _one(api.port), "coordinators", "upstream", "upstream", "api.port", "api"),
        Service("api", "tcp", _one(api.port), "coordinators", "nodes", "cluster", "api.port"),
        Service("bgp", "tcp", _one(frr.BGP_PORT), "all", "nodes", "cluster", "frr.BGP_PORT", "bgp"),
        Service("bgp", "tcp", _one(frr.BGP_PORT), "all", "routers", "upstream", "frr.BGP_PORT"),
        Service(
            "zookeeper",
            "tcp",
            _one(zk.client_port),
            "coordinators",
            "nodes",
            "cluster",
            "zookeeper.client_port",
            "zookeeper",
        ),
        Service(
            "zookeeper-quorum",
            "tcp",
            _one(zookeeper.QUORUM_PORT),
            "coordinators",
            "coordinators",
            "cluster",
            "zookeeper.QUORUM_PORT",
        ),
        Service(
            "zookeeper-election",
            "tcp",
            _one(zookeeper.ELECTION_PORT),
            "coordinators",
            "coordinators",
            "cluster",
            "zookeeper.ELECTION_PORT",
        ),
        Service(
            "ceph-mon", "tcp", _one(ceph.MON_V2_PORT), "coordinators", "nodes", "storage", "ceph.MON_V2_PORT", "ceph"
        ),
        Service("ceph-mon-v1", "tcp", _one(ceph.MON_PORT), "coordinators", "nodes", "storage", "ceph.MON_PORT", "ceph"),
        Service("ceph-osd-mgr", "tcp", ceph.DAEMON_PORTS, "all", "nodes", "storage", "ceph.DAEMON_PORTS", "ceph"),
        Service(
            "postgresql",
            "tcp",
            _one(pt.postgres_port),
            "coordinators",
            "nodes",
            "cluster",
            "patroni.postgres_port",
            "postgresql",
        ),
        Service(
            "patroni", "tcp", _one(pt.rest_port), "coordinators", "nodes", "cluster", "patroni.rest_port", "patroni"
        ),
        Service("libvirt-tls", "tcp", _one(libvirt.TLS_PORT), "all", "nodes", "cluster", "libvirt.TLS_PORT"),
        Service("migration", "tcp", libvirt.MIGRATION_PORTS, "all", "nodes", "cluster", "libvirt.MIGRATION_PORTS"),
        Service("vxlan", "udp", _one(VXLAN_PORT), "all", "nodes", "cluster", "firewall.VXLAN_PORT"),
        Service("dhcp-client", "udp", _one(DHCP_CLIENT_PORT), "all", "any", "any", "DHCP", sport=DHCP_SERVER_PORT),
    ]


def _device(cfg: ClusterFile, network: Network) -> str | None:
    if network == "cluster":
        return cfg.network.cluster.device
    if network == "storage":
        return cfg.storage_network.device
    if network == "upstream":
        return cfg.network.upstream.device
    return None


def _addresses(cfg: ClusterFile, network: Network, nodes: list[Node]) -> list[str]:
    """The exact addresses `nodes` use on `network`, and that network's floating IP (held by a coordinator)."""
    if network == "storage":
        ips = [cfg.storage_ip(n) for n in nodes]
        floating = cfg.storage_network.floating_ip
    elif network == "cluster":
        ips = [n.ip.cluster for n in nodes]
        floating = cfg.network.cluster.floating_ip
    else:
        raise ValueError(f"node addresses are on the cluster or storage network, not {network}")
    return list(dict.fromkeys(str(ip) for ip in [*ips, floating] if ip is not None))


def admin_networks(cfg: ClusterFile) -> list[str]:
    """Where SSH is accepted from: [firewall] ssh, or the upstream subnet."""
    chosen = cfg.firewall.ssh if cfg.firewall.ssh is not None else [cfg.network.upstream.subnet]
    return [str(ipaddress.ip_network(str(n))) for n in chosen]


def sources(cfg: ClusterFile, service: Service) -> list[str] | None:
    """The allowed source addresses of a service (None: any source on its network's interface)."""
    if service.sources == "nodes":
        return _addresses(cfg, service.network, list(cfg.nodes))
    if service.sources == "coordinators":
        return _addresses(cfg, service.network, cfg.coordinators)
    if service.sources == "admin":
        return admin_networks(cfg)
    if service.sources == "routers":
        return [str(r.address) for r in cfg.bgp.routers]
    return None


def extra_sources(cfg: ClusterFile, service: Service) -> list[str]:
    if service.extra is None or service.extra == "ssh":  # ssh's list replaces the default (admin_networks)
        return []
    return [str(n) for n in getattr(cfg.firewall, service.extra)]


def _ports(service: Service) -> str:
    first, last = service.ports
    return str(first) if first == last else f"{first}-{last}"


def _set(items: list[str]) -> str:
    return "{ " + ", ".join(items) + " }"


def _rule(service: Service, device: str | None, saddrs: list[str] | None, comment: str) -> str:
    parts = []
    if device is not None:
        parts.append(f'iifname "{device}"')
    if saddrs is not None:
        parts.append(f"ip saddr {_set(saddrs)}")
    if service.sport is not None:
        parts.append(f"{service.proto} sport {service.sport}")
    parts += [f"{service.proto} dport {_ports(service)}", "accept", f'comment "{comment}"']
    return " ".join(parts)


def rules(cfg: ClusterFile, node: Node) -> list[str]:
    """The accept rules of the services running on `node`, in SERVICES order."""
    out = []
    for service in services(cfg):
        if service.on == "coordinators" and not node.coordinator:
            continue
        saddrs = sources(cfg, service)
        if saddrs != []:  # an empty list (no routers, ssh = []) admits nobody: no rule
            out.append(_rule(service, _device(cfg, service.network), saddrs, service.name))
        extra = extra_sources(cfg, service)
        if extra:
            out.append(_rule(service, None, extra, f"{service.name} (firewall.{service.extra})"))
    return out


ICMP_TYPES = ("echo-request", "destination-unreachable", "time-exceeded", "parameter-problem")
ICMPV6_TYPES = (
    "echo-request",
    "destination-unreachable",
    "packet-too-big",
    "time-exceeded",
    "parameter-problem",
    "nd-router-advert",
    "nd-neighbor-solicit",
    "nd-neighbor-advert",
)


def render(cfg: ClusterFile, node: Node) -> str:
    """The whole ruleset file for `nft -f`: it replaces table inet pvc atomically, whether or not it exists."""
    body = [
        "type filter hook input priority filter; policy drop;",
        'iifname "lo" accept',
        "ct state established,related accept",
        "ct state invalid drop",
        f'meta mark & {ACCEPT_MARK:#010x} == {ACCEPT_MARK:#010x} accept comment "admitted by another PVC table"',
        f"icmp type {_set(list(ICMP_TYPES))} accept",
        f"icmpv6 type {_set(list(ICMPV6_TYPES))} accept",
        *rules(cfg, node),
    ]
    lines = [
        f"# PVC node firewall of {node.name}, rendered from cluster.toml at every boot (docs/security.md).",
        "# Do not edit: change cluster.toml's [firewall] instead.",
        f"table inet {TABLE}",
        f"delete table inet {TABLE}",
        f"table inet {TABLE} {{",
        "\tchain input {",
        *[f"\t\t{line}" for line in body],
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_off() -> str:
    """[firewall] enabled = false: remove PVC's table (a node that had one keeps none)."""
    return f"table inet {TABLE}\ndelete table inet {TABLE}\n"


# -- the ports table of docs/security.md ---------------------------------------------------------------------------------
SOURCE_TEXT: dict[str, str] = {
    "nodes": "every node's {net} IP",
    "coordinators": "the coordinators' {net} IPs",
    "upstream": "anywhere on the upstream network",
    "admin": "`[firewall] ssh` (default: the upstream subnet)",
    "routers": "the `[bgp]` routers, on the upstream network",
    "any": "anywhere",
}


def ports_table(cfg: ClusterFile) -> str:
    """A Markdown table of `services(cfg)`: what docs/security.md shows (for the default ports)."""
    rows = [
        "| service | port | on | accepted from | port set by | more sources |",
        "|---|---|---|---|---|---|",
    ]
    for s in services(cfg):
        port = f"{s.proto} {_ports(s)}" + (f" (from port {s.sport})" if s.sport is not None else "")
        who = SOURCE_TEXT[s.sources].format(net=s.network)
        if s.sources in ("nodes", "coordinators"):
            who += " and floating IP"
        extra = f"`[firewall] {s.extra}`" if s.extra and s.extra != "ssh" else ""
        on = "every node" if s.on == "all" else "coordinators"
        rows.append(f"| {s.name} | {port} | {on} | {who} | `{s.port_from}` | {extra} |")
    return "\n".join(rows) + "\n"


# -- on the node ---------------------------------------------------------------------------------------------------------
def step(ctx: Context) -> str:
    """Check the ruleset with `nft -c`, then load it (atomically: the old table stays until the new one is in)."""
    text = render(ctx.cfg, ctx.node) if ctx.cfg.firewall.enabled else render_off()
    write(RULESET_PATH, text)
    try:
        run("nft", "-c", "-f", RULESET_PATH, timeout=30)
    except StepFailed as exc:
        raise StepFailed(f"nftables refused the rendered firewall {RULESET_PATH}", exc.log) from None
    run("nft", "-f", RULESET_PATH, timeout=30)
    if not ctx.cfg.firewall.enabled:
        ctx.say("WARNING: [firewall] enabled = false: this node has no firewall; every service is open")
        return "off ([firewall] enabled = false)"
    count = len(rules(ctx.cfg, ctx.node))
    return f"table inet {TABLE} loaded: default drop, {count} service rule(s)"
