"""Cluster-wide storage facts for fast reads: health and usage, measured by the primary and kept in ZooKeeper."""

from __future__ import annotations

import rados

from pvc.nodeos.state.models import StorageStatus
from pvc.nodeos.state.store import ClusterState
from pvc.nodeos.storage.ceph import mon_command
from pvc.nodeos.storage.pools import list_pools


def measure(cluster: rados.Rados, by: str = "") -> StorageStatus:
    health = mon_command(cluster, "health")
    df = mon_command(cluster, "df")["stats"]
    osd = mon_command(cluster, "osd stat")
    pg = mon_command(cluster, "pg stat")
    pg_summary = pg.get("pg_summary", pg)
    states = {s["name"]: s["num"] for s in pg_summary.get("num_pg_by_state", [])}
    total = int(df.get("total_bytes", 0))
    used = int(df.get("total_used_raw_bytes", df.get("total_used_bytes", 0)))
    return StorageStatus(
        health=health["status"],
        checks={name: c.get("summary", {}).get("message", "") for name, c in health.get("checks", {}).items()},
        total_bytes=total,
        used_bytes=used,
        avail_bytes=int(df.get("total_avail_bytes", 0)),
        used_percent=round(100.0 * used / total, 2) if total else 0.0,
        osds=osd.get("num_osds", 0),
        osds_up=osd.get("num_up_osds", 0),
        osds_in=osd.get("num_in_osds", 0),
        pgs=int(pg_summary.get("num_pgs", sum(states.values()))),
        pg_states=states,
        pools=list_pools(cluster),
        by=by,
    )


def publish(state: ClusterState, cluster: rados.Rados, by: str = "") -> StorageStatus:
    status = measure(cluster, by)
    state.set_storage_status(status)
    return status


def unreachable(state: ClusterState, why: str, by: str = "") -> None:
    state.set_storage_status(StorageStatus(health="unreachable", checks={"CEPH_UNREACHABLE": why}, by=by))
