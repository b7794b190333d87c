"""Pools: list with usage, create, change size, remove (only with the pool's name as confirmation).

`ensure_pool` is the one way a pool comes to be: formation creates the pools cluster.toml declares with it, and
`create_pool` (the API) checks the request first and initialises the pool for RBD after.
"""

from __future__ import annotations

import rados
import rbd

from pvc.nodeos.state.models import PoolRecord
from pvc.nodeos.storage.ceph import Exists, Invalid, Missing, Refused, mon_command

FULL_RATIO = 0.80  # volume create, clone and resize are refused above this use unless forced


def list_pools(cluster: rados.Rados) -> list[PoolRecord]:
    df = {p["name"]: p["stats"] for p in mon_command(cluster, "df", detail="detail")["pools"]}
    return [
        _record(detail, df.get(detail["pool_name"], {}))
        for detail in mon_command(cluster, "osd pool ls", detail="detail")
    ]


def _record(detail: dict, stats: dict) -> PoolRecord:
    stored = stats.get("stored", stats.get("bytes_used", 0))
    quota = detail.get("quota_max_bytes", 0) or 0
    total = stored + stats.get("max_avail", 0)
    capacity = min(total, quota) if quota else total
    return PoolRecord(
        name=detail["pool_name"],
        id=detail["pool_id"],
        size=detail["size"],
        min_size=detail["min_size"],
        pgs=detail["pg_num"],
        stored_bytes=stored,
        capacity_bytes=capacity,
        quota_bytes=quota,
        used_percent=round(100.0 * _used(stored, capacity), 2),
        objects=stats.get("objects", 0),
    )


def _used(stored: int, capacity: int) -> float:
    return min(1.0, stored / capacity) if capacity else 0.0


def get_pool(cluster: rados.Rados, name: str) -> PoolRecord:
    for pool in list_pools(cluster):
        if pool.name == name:
            return pool
    raise Missing(f"no pool '{name}'")


def create_pool(cluster: rados.Rados, name: str, pgs: int, size: int, min_size: int) -> PoolRecord:
    """A new RBD pool, refused when the name is taken or the cluster has fewer OSDs than `size`."""
    if pgs < 1 or pgs & (pgs - 1):
        raise Invalid(f"pgs must be a power of two, got {pgs}", "pgs")
    _check_min_size(size, min_size)
    if cluster.pool_exists(name):
        raise Exists(f"pool '{name}' already exists")
    _check_osds(cluster, size)
    ensure_pool(cluster, name, pgs, size, min_size)
    with cluster.open_ioctx(name) as ioctx:
        rbd.RBD().pool_init(ioctx, True)
    return get_pool(cluster, name)


def finished_pools(cluster: rados.Rados) -> set[str]:
    """The pools ensure_pool has finished (they have the rbd application, which it enables last)."""
    apps = mon_command(cluster, "osd pool application get") or {}
    return {name for name, enabled in apps.items() if "rbd" in (enabled or {})}


def ensure_pool(cluster: rados.Rados, name: str, pgs: int, size: int, min_size: int) -> None:
    """Create RBD pool `name` with `pgs` placement groups, or finish one whose creation was interrupted: size,
    min_size, then the rbd application last, so that a pool that has it is complete (finished_pools)."""
    if name not in mon_command(cluster, "osd pool ls"):  # the mon's word: this client's map may be older
        mon_command(cluster, "osd pool create", pool=name, pg_num=pgs, pgp_num=pgs)
        cluster.wait_for_latest_osdmap()
    _set_size(cluster, name, size, min_size)
    mon_command(cluster, "osd pool application enable", pool=name, app="rbd")


def set_size(cluster: rados.Rados, name: str, size: int, min_size: int | None = None) -> PoolRecord:
    """Change a pool's copies; without `min_size`, min_size becomes size - 1 (at least 1)."""
    if not cluster.pool_exists(name):
        raise Missing(f"no pool '{name}'")
    _check_osds(cluster, size)
    min_size = min_size if min_size is not None else max(1, size - 1)
    _check_min_size(size, min_size)
    _set_size(cluster, name, size, min_size)
    return get_pool(cluster, name)


def _set_size(cluster: rados.Rados, name: str, size: int, min_size: int) -> None:
    if size == 1:  # no redundancy, as asked (a one-node cluster): Ceph wants it allowed, and said twice
        mon_command(cluster, "config set", who="global", name="mon_allow_pool_size_one", value="true")
        mon_command(cluster, "config set", who="global", name="mon_warn_on_pool_no_redundancy", value="false")
    flags = {"yes_i_really_mean_it": True} if size == 1 else {}
    mon_command(cluster, "osd pool set", pool=name, var="size", val=str(size), **flags)
    mon_command(cluster, "osd pool set", pool=name, var="min_size", val=str(min_size))


def _check_min_size(size: int, min_size: int) -> None:
    if not 1 <= min_size <= size:
        raise Invalid(f"min_size must be between 1 and size ({size}), got {min_size}", "min_size")


def _check_osds(cluster: rados.Rados, size: int) -> None:
    if size < 1:
        raise Invalid(f"size must be at least 1, got {size}", "size")
    osds = mon_command(cluster, "osd stat")["num_osds"]
    if size > osds:
        raise Invalid(f"size {size} needs {size} OSDs; the cluster has {osds}", "size")


def set_quota(cluster: rados.Rados, name: str, max_bytes: int) -> PoolRecord:
    """Cap the pool at `max_bytes` (0: no cap). The 80 % rule counts against the cap."""
    if not cluster.pool_exists(name):
        raise Missing(f"no pool '{name}'")
    if max_bytes < 0:
        raise Invalid(f"quota must be 0 (none) or a positive number of bytes, got {max_bytes}", "quota_bytes")
    mon_command(cluster, "osd pool set-quota", pool=name, field="max_bytes", val=str(max_bytes))
    return get_pool(cluster, name)


def remove_pool(
    cluster: rados.Rados, name: str, confirm: str | None, used_by: dict[str, list[str]] | None = None
) -> None:
    """Remove a pool, with its name as confirmation. Refused for Ceph's own pools (a name starting with '.', such
    as .mgr), while VMs name volumes in it (`used_by`: volume -> VM names, from the cluster state), and while a live
    client (a running QEMU) holds one of its volumes."""
    if name not in mon_command(cluster, "osd pool ls"):  # the mon's word: this client's map may be older
        raise Missing(f"no pool '{name}'")
    if name.startswith("."):
        raise Refused(f"pool '{name}' is Ceph's own: it is never removed")
    if confirm != name:
        raise Refused(f"removing pool '{name}' destroys every volume in it: confirm with the pool's name")
    if used_by:
        named = "; ".join(f"{volume}: {', '.join(vms)}" for volume, vms in sorted(used_by.items()))
        raise Refused(f"pool '{name}' holds volumes that VMs use ({named}): remove the VMs or their disks first")
    from pvc.nodeos.storage import locks, volumes  # they build on this module

    held = []
    for volume in volumes.list_volumes(cluster, name):
        holder = locks.live_holder(cluster, name, volume.name)
        if holder is not None:
            held.append(f"{volume.name} (client {holder.address})")
    if held:
        raise Refused(f"pool '{name}' has volumes held by running clients: {', '.join(held)}")
    mon_command(cluster, "osd pool rm", pool=name, pool2=name, yes_i_really_really_mean_it=True)
    cluster.wait_for_latest_osdmap()


def check_room(pool: PoolRecord, force: bool, action: str) -> None:
    used = _used(pool.stored_bytes, pool.capacity_bytes)
    if used > FULL_RATIO and not force:
        raise Refused(
            f"pool '{pool.name}' is {used:.0%} full ({pool.stored_bytes} of {pool.capacity_bytes} bytes, "
            f"over {FULL_RATIO:.0%}): refusing to {action} without force"
        )
