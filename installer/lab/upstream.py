"""The lab's upstream: a router namespace on the lab's upstream bridge running FRR (zebra + bgpd), peering with every
node as the first `[bgp]` router of the lab's cluster.toml, and a "world" namespace behind it holding the world
address, so a VM's NAT and the managed subnets the cluster announces can be checked from outside the cluster.

    nodes (192.0.2.11..) --- up0 (lab namespace: gateway 192.0.2.254) --- router (192.0.2.253, FRR) --- world

The lab namespace keeps the nodes' default gateway and forwards the world's subnet to the router; the router reaches
the upstream subnet directly and learns the managed subnets without NAT from the primary by BGP. A config without
`[bgp] routers` gets no upstream. The plan and bgpd's configuration are pure; `create`/`destroy` do the work.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from pvc.config.schema import ClusterFile
from pvc.installer.lab.command import LabError, ip, spawn
from pvc.installer.lab.machine import enter_netns
from pvc.installer.lab.network import forward
from pvc.installer.lab.state import Upstream

WORLD_SUBNET = "198.18.0.0/24"  # RFC 2544's benchmark range: never a real destination
WORLD_ADDRESS = "198.18.0.1"  # the world's one host
WORLD_GATEWAY = "198.18.0.254"  # the router's side of the world link
FRR_RUN = Path("/var/run/frr")  # FRR's pathspace folders (`-N <namespace>`; vtysh -N <namespace>)


@dataclass(frozen=True)
class RouterPlan:
    """Plain data: the lab's upstream router for a config."""

    router_ns: str
    world_ns: str
    address: str  # the router's upstream address (the [bgp] router)
    prefixlen: int  # of the upstream subnet
    asn: int
    cluster_asn: int
    peers: list[str]  # the nodes' upstream addresses
    lab_bridge: str  # the upstream bridge in the lab namespace


def plan(cfg: ClusterFile, lab_ns: str, upstream_bridge: str) -> RouterPlan | None:
    """The router the config's first `[bgp]` router describes; None without one. A router outside the upstream
    subnet is a LabError naming the key (the lab can only plug it into that bridge)."""
    if not cfg.bgp.routers:
        return None
    router = cfg.bgp.routers[0]
    subnet = ipaddress.ip_network(str(cfg.network.upstream.subnet))
    if ipaddress.ip_address(str(router.address)) not in subnet:
        raise LabError(
            f"bgp.routers[0].address: {router.address} is not in the upstream subnet {subnet}; the lab's router sits "
            "on the upstream bridge"
        )
    return RouterPlan(
        router_ns=f"{lab_ns}-router",
        world_ns=f"{lab_ns}-world",
        address=str(router.address),
        prefixlen=subnet.prefixlen,
        asn=router.asn or cfg.bgp.asn,
        cluster_asn=cfg.bgp.asn,
        peers=[str(n.ip.upstream) for n in cfg.nodes if n.ip.upstream],
        lab_bridge=upstream_bridge,
    )


def render_bgpd(p: RouterPlan) -> str:
    """bgpd of the lab router: every node a neighbour; it accepts what they announce (only the primary announces
    the managed subnets without NAT) and announces nothing itself."""
    lines = [
        "frr defaults traditional",
        "hostname pvc-lab-router",
        "!",
        f"router bgp {p.asn}",
        f" bgp router-id {p.address}",
        " no bgp ebgp-requires-policy",
        " no bgp default ipv4-unicast",
        " neighbor pvc peer-group",
        f" neighbor pvc remote-as {p.cluster_asn}",
        " neighbor pvc timers connect 2",
    ]
    lines += [f" neighbor {peer} peer-group pvc" for peer in p.peers]
    lines += [
        " !",
        " address-family ipv4 unicast",
        "  neighbor pvc activate",
        " exit-address-family",
        "exit",
        "!",
    ]
    return "\n".join(lines) + "\n"


def record(p: RouterPlan) -> Upstream:
    return Upstream(
        router_ns=p.router_ns, world_ns=p.world_ns, address=p.address, asn=p.asn, world_address=WORLD_ADDRESS
    )


def create(p: RouterPlan, lab_ns: str, log: Path, up: Upstream) -> None:
    """The router and world namespaces, their links and routes, and the router's zebra and bgpd (their pids go
    into `up` as they start, so `down` ends them)."""
    existing = set(ip("netns", "list").stdout.split())
    for ns in (p.router_ns, p.world_ns):
        if ns in existing:
            raise LabError(f"network namespace {ns} already exists: a lab is up (pvc-lab down) or left over")
    for ns in (p.router_ns, p.world_ns):
        ip("netns", "add", ns)
        ip("-n", ns, "link", "set", "lo", "up")
    # router <-> the lab's upstream bridge
    ip("-n", lab_ns, "link", "add", "rtup", "type", "veth", "peer", "name", "up0", "netns", p.router_ns)
    ip("-n", lab_ns, "link", "set", "rtup", "master", p.lab_bridge, "up")
    ip("-n", p.router_ns, "addr", "add", f"{p.address}/{p.prefixlen}", "dev", "up0")
    ip("-n", p.router_ns, "link", "set", "up0", "up")
    # router <-> world
    ip("-n", p.router_ns, "link", "add", "wo0", "type", "veth", "peer", "name", "wo0", "netns", p.world_ns)
    prefix = ipaddress.ip_network(WORLD_SUBNET).prefixlen
    ip("-n", p.router_ns, "addr", "add", f"{WORLD_GATEWAY}/{prefix}", "dev", "wo0")
    ip("-n", p.router_ns, "link", "set", "wo0", "up")
    ip("-n", p.world_ns, "addr", "add", f"{WORLD_ADDRESS}/{prefix}", "dev", "wo0")
    ip("-n", p.world_ns, "link", "set", "wo0", "up")
    ip("-n", p.world_ns, "route", "add", "default", "via", WORLD_GATEWAY)
    # the nodes' default gateway (the lab namespace) sends the world's traffic to the router
    ip("-n", lab_ns, "route", "add", WORLD_SUBNET, "via", p.address)
    forward(lab_ns)
    forward(p.router_ns)
    start_frr(p, log, up)


def start_frr(p: RouterPlan, log: Path, up: Upstream) -> None:
    run = FRR_RUN / p.router_ns
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    (run / "zebra.conf").write_text("hostname pvc-lab-router\n")
    (run / "bgpd.conf").write_text(render_bgpd(p))
    for path in (run, *run.iterdir()):
        shutil.chown(path, "frr", "frr")
    for daemon in ("zebra", "bgpd"):
        argv = [f"/usr/lib/frr/{daemon}", "-N", p.router_ns, "-f", str(run / f"{daemon}.conf")]
        argv += ["-i", str(run / f"{daemon}.pid"), "--log", f"file:{run / daemon}.log"]
        proc = spawn(argv, log, preexec_fn=lambda: enter_netns(p.router_ns))
        up.pids.append(proc.pid)
        wait_vty(run / f"{daemon}.vty", daemon)


def wait_vty(path: Path, daemon: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise LabError(
                f"the lab router's {daemon} did not start within {timeout:.0f} s (see its log in {path.parent})"
            )
        time.sleep(0.1)


def vtysh(router_ns: str, command: str) -> str:
    out = subprocess.run(["vtysh", "-N", router_ns, "-c", command], capture_output=True, text=True, timeout=20)
    if out.returncode != 0:
        raise LabError(f"vtysh -N {router_ns} -c {command!r}: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def sessions(router_ns: str) -> dict[str, str]:
    """neighbour -> BGP state, as the lab router sees it."""
    data = json.loads(vtysh(router_ns, "show bgp ipv4 unicast summary json") or "{}")
    return {addr: peer.get("state", "?") for addr, peer in data.get("peers", {}).items()}


def learned(router_ns: str) -> dict[str, list[str]]:
    """prefix -> next hops of the routes the lab router learned by BGP."""
    data = json.loads(vtysh(router_ns, "show ip route bgp json") or "{}")
    return {
        prefix: [hop.get("ip", "") for route in routes for hop in route.get("nexthops", [])]
        for prefix, routes in data.items()
    }


@dataclass(frozen=True)
class UpstreamStatus:
    router: str
    asn: int
    namespace: str
    world: str
    sessions: dict[str, str]  # neighbour -> BGP state
    learned: dict[str, list[str]]  # prefix -> next hops
    problem: str = ""


def status(up: Upstream) -> UpstreamStatus:
    """What `pvc-lab status` shows of the upstream: the router, its BGP sessions and learned routes, the world."""
    peers: dict[str, str] = {}
    routes: dict[str, list[str]] = {}
    problem = ""
    try:
        peers, routes = sessions(up.router_ns), learned(up.router_ns)
    except (LabError, subprocess.TimeoutExpired, ValueError) as exc:
        problem = str(exc)
    return UpstreamStatus(up.address, up.asn, up.router_ns, up.world_address, peers, routes, problem)


def destroy(up: Upstream) -> None:
    """The namespaces and FRR's folder (`down` has ended the daemons)."""
    ip("netns", "del", up.world_ns, check=False)
    ip("netns", "del", up.router_ns, check=False)
    shutil.rmtree(FRR_RUN / up.router_ns, ignore_errors=True)
