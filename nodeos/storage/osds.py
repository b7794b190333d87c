"""OSDs: list with device, size, usage, up/in state and node; out/in; safe removal.

Adding an OSD formats a disk on one node, so it is that node's job: the API records the request (a disk selector)
in ZooKeeper for the node (state.actions.request_osd); the node's formation turns matching blank disks into OSDs.
"""

from __future__ import annotations

from dataclasses import dataclass

import rados

from pvc.nodeos.storage.ceph import Missing, Refused, StorageError, mgr_command, mon_command
from pvc.nodeos.storage.pools import list_pools


@dataclass(frozen=True)
class Osd:
    id: int
    node: str
    device: str
    up: bool
    inside: bool  # "in": takes data
    weight: float
    size_bytes: int
    used_bytes: int
    pgs: int

    @property
    def used_ratio(self) -> float:
        return self.used_bytes / self.size_bytes if self.size_bytes else 0.0


def list_osds(cluster: rados.Rados) -> list[Osd]:
    df = {n["id"]: n for n in (mon_command(cluster, "osd df") or {}).get("nodes", [])}
    meta = {m["id"]: m for m in mon_command(cluster, "osd metadata") or []}
    dump = mon_command(cluster, "osd dump")
    out = []
    for o in dump["osds"]:
        osd_id = o["osd"]
        m, d = meta.get(osd_id, {}), df.get(osd_id, {})
        device = m.get("bluestore_bdev_dev_node") or m.get("bluestore_bdev_path") or m.get("devices", "")
        out.append(
            Osd(
                id=osd_id,
                node=m.get("hostname", ""),
                device=str(device),
                up=bool(o["up"]),
                inside=bool(o["in"]),
                weight=float(o.get("weight", 0.0)),
                size_bytes=int(d.get("kb", 0)) * 1024,
                used_bytes=int(d.get("kb_used", 0)) * 1024,
                pgs=int(d.get("pgs", 0)),
            )
        )
    return sorted(out, key=lambda x: x.id)


def get_osd(cluster: rados.Rados, osd_id: int) -> Osd:
    for osd in list_osds(cluster):
        if osd.id == osd_id:
            return osd
    raise Missing(f"no OSD {osd_id}")


def set_in(cluster: rados.Rados, osd_id: int, inside: bool) -> Osd:
    get_osd(cluster, osd_id)
    mon_command(cluster, "osd in" if inside else "osd out", ids=[str(osd_id)])
    cluster.wait_for_latest_osdmap()
    return get_osd(cluster, osd_id)


def removal_problems(cluster: rados.Rados, osd_id: int) -> list[str]:
    """Why removing this OSD now would be unsafe (empty: safe)."""
    osds = list_osds(cluster)
    target = next((o for o in osds if o.id == osd_id), None)
    if target is None:
        raise Missing(f"no OSD {osd_id}")
    problems = []
    left = sum(1 for o in osds if o.id != osd_id and o.up and o.inside)
    for pool in list_pools(cluster):
        if left < pool.min_size:
            problems.append(
                f"pool '{pool.name}' needs {pool.min_size} OSDs up and in (min_size); without osd.{osd_id} "
                f"{left} would be left"
            )
    if target.up:
        try:
            stop = mgr_command(cluster, "osd ok-to-stop", ids=[str(osd_id)])
            if not stop.get("ok_to_stop", False):
                problems.append(f"stopping osd.{osd_id} would make placement groups inactive")
        except StorageError as exc:
            problems.append(str(exc))
    try:
        destroy = mgr_command(cluster, "osd safe-to-destroy", ids=[str(osd_id)])
        unknown = osd_id in destroy.get("missing_stats", [])
        if unknown and not target.up and not destroy.get("active") and _all_clean(cluster):
            pass  # a stopped OSD reports no statistics; with every PG active+clean nothing depends on it
        elif osd_id not in destroy.get("safe_to_destroy", []):
            why = []
            if destroy.get("active"):
                why.append("placement groups are still mapped to it")
            if destroy.get("stored_pgs"):
                why.append("it still stores placement groups")
            if destroy.get("missing_stats"):
                why.append("Ceph has no statistics for it yet")
            problems.append(
                f"osd.{osd_id} is not safe to destroy ({', '.join(why) or 'Ceph says so'}): mark it out and "
                "wait for the data to move"
            )
    except StorageError as exc:
        problems.append(str(exc))
    return problems


def _all_clean(cluster: rados.Rados) -> bool:
    pg = mon_command(cluster, "pg stat")
    states = pg.get("pg_summary", pg).get("num_pg_by_state", [])
    return all(s["name"] == "active+clean" for s in states)


def remove_osd(cluster: rados.Rados, osd_id: int, force: bool = False) -> None:
    """Purge an OSD from the cluster: refused while that is unsafe (see removal_problems) unless forced. Its
    daemon must be stopped first (Ceph does not purge an OSD that is up)."""
    osd = get_osd(cluster, osd_id)
    problems = removal_problems(cluster, osd_id)
    if problems and not force:
        raise Refused(f"removing osd.{osd_id} is not safe: " + "; ".join(problems) + " (force to remove anyway)")
    if osd.up:
        raise Refused(f"osd.{osd_id} is up: stop its daemon on {osd.node or 'its node'} first")
    if osd.inside:
        mon_command(cluster, "osd out", ids=[str(osd_id)])
    mgr_command(cluster, "osd purge", id=osd_id, yes_i_really_mean_it=True, force=force)
    cluster.wait_for_latest_osdmap()
