"""The resolved view of one node: what cluster.toml means for it once every default is applied.

Used by `pvc config show --node` and, on the node itself, by formation to decide which services it runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvc.config.load import resolve_file
from pvc.config.schema import ClusterFile, DiskSelector, Node

REDACTED = "<redacted>"


def read_join_key(cfg: ClusterFile, base_dir: Path | None) -> str:
    """The join key, inline or from its file. Raises ValueError with a message naming the file."""
    if cfg.cluster.join_key is not None:
        return cfg.cluster.join_key
    assert cfg.cluster.join_key_file is not None
    path = resolve_file(cfg.cluster.join_key_file, base_dir)
    try:
        key = path.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cluster.join_key_file: cannot read '{path}': {exc.strerror or exc}") from None
    if len(key) != 64 or any(c not in "0123456789abcdef" for c in key):
        raise ValueError(f"cluster.join_key_file: '{path}' does not hold a join key (64 lower-case hex characters)")
    return key


def services(cfg: ClusterFile, node: Node) -> list[str]:
    """The services formation starts on `node`, in start order."""
    out = []
    if node.coordinator:
        out += ["zookeeper", "ceph-mon", "ceph-mgr"]
    if node.osds:
        out.append("ceph-osd")
    if node.coordinator:
        out.append("patroni")
    out += ["frr", "libvirtd", "pvcd"]
    if node.coordinator:
        out.append("pvc-api")
    return out


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
        "zookeeper_ensemble": [f"{n.name}={n.ip.cluster}" for n in cfg.coordinators],
        "ceph_mons": [f"{n.name}={cfg.storage_ip(n)}" for n in cfg.coordinators],
        "join_key": REDACTED,
    }
