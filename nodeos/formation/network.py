"""Network: systemd-networkd files for the NICs, bonds, VLANs and node addresses of cluster.toml (pure rendering),
written to /run/systemd/network and applied with `networkctl reload`; ready when every address is present.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Sequence
from pathlib import Path

from pvc.config.schema import ClusterFile, Node
from pvc.nodeos.formation.machinery import Context, StepFailed, run, wait_for, write

NETWORK_DIR = Path("/run/systemd/network")


def addresses(cfg: ClusterFile, node: Node) -> dict[str, list[str]]:
    """device -> the node's addresses on it, as CIDR."""
    out: dict[str, list[str]] = {}
    for name, net in cfg.core_networks():
        ip = getattr(node.ip, name)
        if ip is None:
            continue
        prefix = ipaddress.ip_network(str(net.subnet)).prefixlen
        out.setdefault(net.device, []).append(f"{ip}/{prefix}")
    return out


def render(cfg: ClusterFile, node: Node) -> dict[str, str]:
    """file name -> content, for /run/systemd/network."""
    files: dict[str, str] = {}
    net = cfg.network
    addrs = addresses(cfg, node)
    mtus = {n.name: n.mtu for n in net.nics} | {b.name: b.mtu for b in net.bonds} | {v.name: v.mtu for v in net.vlans}
    for _, core in cfg.core_networks():
        if core.mtu is not None:
            mtus[core.device] = core.mtu
    vlans_of: dict[str, list[str]] = {}
    for vlan in net.vlans:
        vlans_of.setdefault(vlan.parent, []).append(vlan.name)
        files[f"20-pvc-{vlan.name}.netdev"] = _ini(
            ("NetDev", [("Name", vlan.name), ("Kind", "vlan"), ("MTUBytes", vlan.mtu)]), ("VLAN", [("Id", vlan.id)])
        )
    bond_of = {m: b.name for b in net.bonds for m in b.members}
    for bond in net.bonds:
        opts = [("Mode", bond.mode)] + ([("LACPTransmitRate", bond.lacp_rate)] if bond.lacp_rate else [])
        files[f"20-pvc-{bond.name}.netdev"] = _ini(
            ("NetDev", [("Name", bond.name), ("Kind", "bond"), ("MTUBytes", bond.mtu)]), ("Bond", opts)
        )
    devices = [n.name for n in net.nics] + [b.name for b in net.bonds] + [v.name for v in net.vlans]
    for _, core in cfg.core_networks():
        if core.device not in devices:
            devices.append(core.device)
    for dev in devices:
        netsec: list[tuple[str, object]] = [("LinkLocalAddressing", "no"), ("IPv6AcceptRA", "no")]
        if dev in bond_of:
            netsec.append(("Bond", bond_of[dev]))
        netsec += [("VLAN", v) for v in vlans_of.get(dev, [])]
        netsec += [("Address", a) for a in addrs.get(dev, [])]
        if dev == net.upstream.device:
            netsec.append(("Gateway", str(net.upstream.gateway)))
            netsec += [("DNS", str(s)) for s in cfg.cluster.dns_servers]
        link: list[tuple[str, object]] = [("MTUBytes", mtus[dev])] if dev in mtus else []
        link.append(("RequiredForOnline", "yes" if dev in addrs else "no"))
        files[f"30-pvc-{dev}.network"] = _ini(("Match", [("Name", dev)]), ("Link", link), ("Network", netsec))
    return files


def _ini(*sections: tuple[str, Sequence[tuple[str, object]]]) -> str:
    out = []
    for name, items in sections:
        out.append(f"[{name}]")
        out += [f"{k}={v}" for k, v in items]
        out.append("")
    return "\n".join(out)


def present_addresses() -> set[str]:
    data = json.loads(subprocess.run(["ip", "-j", "addr"], capture_output=True, text=True).stdout or "[]")
    return {f"{a['local']}/{a['prefixlen']}" for link in data for a in link.get("addr_info", [])}


def step(ctx: Context) -> str:
    files = render(ctx.cfg, ctx.node)
    changed = False
    for name, text in files.items():
        changed |= write(NETWORK_DIR / name, text)
    for stale in NETWORK_DIR.glob("*-pvc-*"):
        if stale.name not in files:
            stale.unlink()
            changed = True
    run("systemctl", "start", "systemd-networkd.service")
    if changed:
        run("networkctl", "reload")
    wanted = {a for addrs in addresses(ctx.cfg, ctx.node).values() for a in addrs}

    def ready() -> bool:
        missing = wanted - present_addresses()
        if missing:
            raise StepFailed(f"addresses not up yet: {', '.join(sorted(missing))}")
        return True

    wait_for("the node's addresses", ready, 60, 0.5, log=lambda: run("networkctl", "status", "--no-pager", check=False))
    return ", ".join(sorted(wanted))
