"""The resolved view of one node: what cluster.toml means for it once every default is applied.

Used by `pvc config show --node` and, on the node itself, by formation to decide which services it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pvc.config.schema import ClusterFile, DiskSelector, Node

REDACTED = "<redacted>"


def _everywhere(node: Node) -> bool:
    return True


def _coordinator(node: Node) -> bool:
    return node.coordinator


def _has_osds(node: Node) -> bool:
    return bool(node.osds)


# The services formation starts, in start order, and which nodes run each: the one answer to "what runs on this
# node", read by `pvc config show` (services()) and by the formation plan (its steps' conditions).
SERVICES: dict[str, Callable[[Node], bool]] = {
    "zookeeper": _coordinator,
    "ceph-mon": _coordinator,
    "ceph-mgr": _coordinator,
    "ceph-osd": _has_osds,
    "patroni": _coordinator,
    "frr": _everywhere,
    "libvirtd": _everywhere,
    "pvcd": _everywhere,
    "pvc-api": _coordinator,
}


def runs(node: Node, service: str) -> bool:
    """Whether `node` runs `service` (a key of SERVICES)."""
    return SERVICES[service](node)


def services(cfg: ClusterFile, node: Node) -> list[str]:
    """The services formation starts on `node`, in start order."""
    return [name for name, on in SERVICES.items() if on(node)]


def api_addresses(cfg: ClusterFile, node: Node) -> list[str]:
    """Where the API listens on `node`: loopback (formation's probe, local clients), the node's upstream and cluster
    IPs, and the upstream and cluster floating IPs (held by the primary; bound before it holds them: IP_FREEBIND,
    pvc.api.gunicorn). Never 0.0.0.0: not the storage network, not a VM bridge."""
    net = cfg.network
    ips = ["127.0.0.1", node.ip.upstream, node.ip.cluster, net.upstream.floating_ip, net.cluster.floating_ip]
    return list(dict.fromkeys(str(ip) for ip in ips if ip is not None))


def roles(node: Node) -> list[str]:
    out = ["coordinator" if node.coordinator else "hypervisor"]
    if node.osds:
        out.append("storage")
    return out


def _selector(sel: DiskSelector) -> dict[str, Any]:
    return {k: v for k, v in sel.model_dump().items() if v is not None}


def node_view(cfg: ClusterFile, name: str) -> dict[str, Any]:
    """A plain-data description of node `name`, with every secret redacted."""
    node = cfg.node(name)
    storage_net = "storage" if cfg.network.storage is not None else "cluster"
    ips: dict[str, str | None] = {
        "upstream": str(node.ip.upstream) if node.ip.upstream else None,
        "cluster": str(node.ip.cluster) if node.ip.cluster else None,
        "storage": str(cfg.storage_ip(node)) if cfg.storage_ip(node) else None,
    }
    return {
        "cluster": cfg.cluster.name,
        "node": node.name,
        "id": node.id,
        "fqdn": f"{node.name}.{cfg.cluster.domain}",
        "roles": roles(node),
        "macs": list(node.macs),
        "ips": ips,
        "storage_network": storage_net,
        "router_id": str(node.router_id or node.ip.cluster),
        "bgp": {"asn": cfg.bgp.asn, "peers": [str(p.address) for p in cfg.bgp.routers]},
        "ipmi": None
        if node.ipmi is None
        else {"address": node.ipmi.address, "username": node.ipmi.username, "password": REDACTED},
        "data_disk": _selector(node.data_disk),
        "osd_disks": [_selector(o) for o in node.osds],
        "services": services(cfg, node),
        "api_listen": api_addresses(cfg, node) if runs(node, "pvc-api") else [],
        "zookeeper_ensemble": [f"{n.name}={n.ip.cluster}" for n in cfg.coordinators],
        "ceph_mons": [f"{n.name}={cfg.storage_ip(n)}" for n in cfg.coordinators],
        "join_key": REDACTED,
    }
