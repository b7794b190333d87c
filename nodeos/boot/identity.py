"""Which node of cluster.toml this machine is: `pvc.node=NAME`, else a MAC address it owns (DESIGN.md decision 2)."""

from __future__ import annotations

from pathlib import Path

from pvc.config.schema import ClusterFile, Node

SYS_NET = Path("/sys/class/net")


def owned_macs(sys_net: Path = SYS_NET) -> list[str]:
    """MAC addresses of this machine's physical-looking interfaces (loopback and all-zero addresses left out)."""
    out = []
    for dev in sorted(sys_net.iterdir()) if sys_net.is_dir() else []:
        try:
            mac = (dev / "address").read_text().strip().lower()
        except OSError:
            continue
        if mac and mac != "00:00:00:00:00:00" and dev.name != "lo":
            out.append(mac)
    return out


class NotInConfig(Exception):
    """This machine is not in cluster.toml: the message says what was looked for."""


def find(cfg: ClusterFile, macs: list[str], node_arg: str | None) -> Node:
    names = [n.name for n in cfg.nodes]
    if node_arg:
        if node_arg not in names:
            raise NotInConfig(
                f"pvc.node={node_arg} on the kernel command line, but cluster.toml has no such node ({', '.join(names)})"
            )
        return cfg.node(node_arg)
    mine = {m.lower() for m in macs}
    hits = [n for n in cfg.nodes if mine & {m.lower() for m in n.macs}]
    if len(hits) == 1:
        return hits[0]
    if len(hits) > 1:
        raise NotInConfig(
            f"this machine's MACs match several nodes ({', '.join(n.name for n in hits)}): fix nodes[].macs"
        )
    return _no_match(macs, names)


def _no_match(macs: list[str], names: list[str]) -> Node:
    shown = ", ".join(macs) or "none"
    raise NotInConfig(
        f"no [[nodes]] entry lists a MAC address of this machine (this machine has: {shown}); "
        f"add one to nodes[].macs of one of {', '.join(names)}, or boot with pvc.node=NAME"
    )
