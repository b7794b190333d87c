"""FRR: zebra and bgpd with the cluster's ASN. Every node peers with every other node over the cluster network
(iBGP) and with the upstream routers of cluster.toml [bgp] (pure rendering + the formation step)."""

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


def peers(cfg: ClusterFile, node: Node) -> list[tuple[str, int, str]]:
    """(address, remote ASN, description) of every BGP neighbour of `node`."""
    out = [
        (str(n.ip.cluster), cfg.bgp.asn, f"pvc node {n.name}")
        for n in cfg.nodes
        if n.name != node.name and n.ip.cluster
    ]
    out += [(str(r.address), r.asn or cfg.bgp.asn, r.description or "upstream router") for r in cfg.bgp.routers]
    return out


def render_conf(cfg: ClusterFile, node: Node) -> str:
    router_id = str(node.router_id or node.ip.cluster)
    lines = [
        "frr defaults datacenter",
        f"hostname {node.name}",
        "log syslog informational",
        "service integrated-vtysh-config",
        "!",
        f"router bgp {cfg.bgp.asn}",
        f" bgp router-id {router_id}",
        " no bgp ebgp-requires-policy",
        " no bgp default ipv4-unicast",
    ]
    for addr, asn, desc in peers(cfg, node):
        lines += [
            f" neighbor {addr} remote-as {asn}",
            f" neighbor {addr} description {desc}",
            f" neighbor {addr} timers connect 2",
        ]
    lines += [" !", " address-family ipv4 unicast"]
    lines += [f"  neighbor {addr} activate" for addr, _, _ in peers(cfg, node)]
    lines += [" exit-address-family", "exit", "!", "line vty", "!"]
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
