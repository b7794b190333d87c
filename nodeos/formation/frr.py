"""FRR: zebra and bgpd with the cluster's ASN on every node. Every node peers with every other node over the cluster
network (iBGP; EVPN for the managed client networks' VXLANs) and with the upstream routers of cluster.toml [bgp],
which learn the managed subnets from the primary (pure rendering + the formation step)."""

from __future__ import annotations

import json

from pvc.config.schema import ClusterFile, Node
from pvc.nodeos.formation import units
from pvc.nodeos.formation.machinery import Context, run, wait_for, write

DAEMONS = "/etc/frr/daemons"
CONF = "/etc/frr/frr.conf"
UNIT = "frr.service"  # Debian's unit: frrinit.sh starts the daemons named in /etc/frr/daemons under watchfrr
BGP_PORT = 179  # bgpd's default, which the rendered config keeps (the firewall opens it)


def render_daemons() -> str:
    lines = ["zebra=yes", "bgpd=yes", "staticd=yes", "vtysh_enable=yes"]
    lines += [
        f"{d}=no"
        for d in (
            "ospfd",
            "ospf6d",
            "ripd",
            "ripngd",
            "isisd",
            "pimd",
            "ldpd",
            "nhrpd",
            "eigrpd",
            "babeld",
            "sharpd",
            "pbrd",
            "bfdd",
            "fabricd",
            "vrrpd",
            "pathd",
        )
    ]
    lines += [
        'zebra_options="  -A 127.0.0.1 -s 90000000"',
        'bgpd_options="   -A 127.0.0.1"',
        'staticd_options="-A 127.0.0.1"',
    ]
    return "\n".join(lines) + "\n"


ANNOUNCE = "pvc-announce"  # prefix-list (kept by pvcd: the managed subnets) and route-map of what BGP announces
FABRIC, UPSTREAM = "fabric", "upstream"  # peer groups: the cluster's nodes (EVPN, iBGP) and the [bgp] routers
FABRIC_OUT = "pvc-fabric-out"  # route-map of what a node sends the others over IPv4: its subnets, never to re-export


def fabric_peers(cfg: ClusterFile, node: Node) -> list[tuple[str, str]]:
    """(cluster IP, description) of every other node: the EVPN fabric, a full iBGP mesh over the cluster network."""
    return [(str(n.ip.cluster), f"pvc node {n.name}") for n in cfg.nodes if n.name != node.name and n.ip.cluster]


def upstream_peers(cfg: ClusterFile) -> list[tuple[str, int, str]]:
    """(address, remote ASN, description) of the upstream routers of [bgp]."""
    return [(str(r.address), r.asn or cfg.bgp.asn, r.description or "upstream router") for r in cfg.bgp.routers]


def peers(cfg: ClusterFile, node: Node) -> list[tuple[str, int, str]]:
    """(address, remote ASN, description) of every BGP neighbour of `node`."""
    return [(a, cfg.bgp.asn, d) for a, d in fabric_peers(cfg, node)] + upstream_peers(cfg)


def render_conf(cfg: ClusterFile, node: Node) -> str:
    """bgpd's configuration: the fabric peer group carries EVPN (`advertise-all-vni`: every node's VXLANs, with the
    node's cluster IP as VTEP) and IPv4; the upstream routers get what the route-map ANNOUNCE lets through of the
    connected routes: the managed subnets in the prefix-list ANNOUNCE, which pvcd keeps current (only the primary
    holds their gateways, so only it announces them). What the primary sends the other nodes carries NO_EXPORT
    (FABRIC_OUT): they keep the route, but never pass it on to the upstream routers, which would otherwise learn
    each subnet from every node and send its traffic through any of them."""
    router_id = str(node.router_id or node.ip.cluster)
    lines = [
        "frr defaults datacenter",
        f"hostname {node.name}",
        "log syslog informational",
        "service integrated-vtysh-config",
        "!",
        f"route-map {ANNOUNCE} permit 10",
        f" match ip address prefix-list {ANNOUNCE}",
        "exit",
        "!",
        f"route-map {FABRIC_OUT} permit 10",
        " set community no-export additive",
        "exit",
        "!",
        f"router bgp {cfg.bgp.asn}",
        f" bgp router-id {router_id}",
        " no bgp ebgp-requires-policy",
        " no bgp default ipv4-unicast",
        f" neighbor {FABRIC} peer-group",
        f" neighbor {FABRIC} timers connect 2",
        f" neighbor {UPSTREAM} peer-group",
        f" neighbor {UPSTREAM} timers connect 2",
    ]
    for addr, desc in fabric_peers(cfg, node):
        lines += [
            f" neighbor {addr} remote-as {cfg.bgp.asn}",
            f" neighbor {addr} peer-group {FABRIC}",
            f" neighbor {addr} description {desc}",
        ]
    for addr, asn, desc in upstream_peers(cfg):
        lines += [
            f" neighbor {addr} remote-as {asn}",
            f" neighbor {addr} peer-group {UPSTREAM}",
            f" neighbor {addr} description {desc}",
        ]
    lines += [
        " !",
        " address-family ipv4 unicast",
        f"  redistribute connected route-map {ANNOUNCE}",
        f"  neighbor {FABRIC} activate",
        f"  neighbor {FABRIC} send-community",
        f"  neighbor {FABRIC} route-map {FABRIC_OUT} out",
        f"  neighbor {UPSTREAM} activate",
        " exit-address-family",
        " !",
        " address-family l2vpn evpn",
        f"  neighbor {FABRIC} activate",
        "  advertise-all-vni",
        " exit-address-family",
        "exit",
        "!",
        "line vty",
        "!",
    ]
    return "\n".join(lines) + "\n"


def sessions() -> dict[str, str]:
    """neighbour -> state, from bgpd."""
    data = json.loads(run("vtysh", "-c", "show bgp summary json", timeout=20) or "{}")
    return {addr: p.get("state", "?") for addr, p in data.get("ipv4Unicast", {}).get("peers", {}).items()}


def step(ctx: Context) -> str:
    changed = write(DAEMONS, render_daemons(), 0o640)
    changed |= write(CONF, render_conf(ctx.cfg, ctx.node), 0o640)
    run("chown", "frr:frr", DAEMONS, CONF, check=False)
    units.ensure_running(UNIT, changed)
    wanted = {a for a, _, _ in peers(ctx.cfg, ctx.node)}

    def configured() -> bool:
        units.check_alive(UNIT)
        return set(sessions()) == wanted

    # sessions come up as the other nodes arrive: formation only waits for bgpd to hold every neighbour
    wait_for("bgpd to run with every neighbour configured", configured, 120, 1.0, log=lambda: units.journal(UNIT))
    established = sum(1 for s in sessions().values() if s == "Established")
    return f"AS {ctx.cfg.bgp.asn}, {established}/{len(wanted)} session(s) established"
