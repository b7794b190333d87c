"""Pools: list with usage, create, change size, remove (only with the pool's name as confirmation)."""

from __future__ import annotations

from dataclasses import dataclass

import rados
import rbd

from pvc.nodeos.storage.ceph import NotFound, Refused, StorageError, mon_command

FULL_RATIO = 0.80  # volume create, clone and resize are refused above this use unless forced


@dataclass(frozen=True)
class Pool:
    name: str
    id: int
    size: int
    min_size: int
    pgs: int
    stored_bytes: int
    max_avail_bytes: int
    objects: int

    @property
    def used_ratio(self) -> float:
        total = self.stored_bytes + self.max_avail_bytes
        return self.stored_bytes / total if total else 0.0


def list_pools(cluster: rados.Rados) -> list[Pool]:
    df = {p["name"]: p["stats"] for p in mon_command(cluster, "df", detail="detail")["pools"]}
    out = []
    for detail in mon_command(cluster, "osd pool ls", detail="detail"):
        name = detail["pool_name"]
        stats = df.get(name, {})
        out.append(
            Pool(
                name=name,
                id=detail["pool_id"],
                size=detail["size"],
                min_size=detail["min_size"],
                pgs=detail["pg_num"],
                stored_bytes=stats.get("stored", stats.get("bytes_used", 0)),
                max_avail_bytes=stats.get("max_avail", 0),
                objects=stats.get("objects", 0),
            )
        )
    return out


def get_pool(cluster: rados.Rados, name: str) -> Pool:
    for pool in list_pools(cluster):
        if pool.name == name:
            return pool
    raise NotFound(f"no pool '{name}'")


def create_pool(cluster: rados.Rados, name: str, pgs: int, size: int, min_size: int) -> Pool:
    if pgs < 1 or pgs & (pgs - 1):
        raise StorageError(f"pgs must be a power of two, got {pgs}")
    if not 1 <= min_size <= size:
        raise StorageError(f"min_size must be between 1 and size ({size}), got {min_size}")
    if cluster.pool_exists(name):
        raise StorageError(f"pool '{name}' already exists")
    mon_command(cluster, "osd pool create", pool=name, pg_num=pgs, pgp_num=pgs)
    cluster.wait_for_latest_osdmap()
    set_size(cluster, name, size, min_size)
    mon_command(cluster, "osd pool application enable", pool=name, app="rbd")
    with cluster.open_ioctx(name) as ioctx:
        rbd.RBD().pool_init(ioctx, True)
    return get_pool(cluster, name)


def set_size(cluster: rados.Rados, name: str, size: int, min_size: int | None = None) -> Pool:
    if not cluster.pool_exists(name):
        raise NotFound(f"no pool '{name}'")
    osds = mon_command(cluster, "osd stat")["num_osds"]
    if size > osds:
        raise StorageError(f"size {size} needs {size} OSDs; the cluster has {osds}")
    min_size = min_size if min_size is not None else max(1, size - 1)
    if not 1 <= min_size <= size:
        raise StorageError(f"min_size must be between 1 and size ({size}), got {min_size}")
    flags = {"yes_i_really_mean_it": True} if size == 1 else {}
    mon_command(cluster, "osd pool set", pool=name, var="size", val=str(size), **flags)
    mon_command(cluster, "osd pool set", pool=name, var="min_size", val=str(min_size))
    return get_pool(cluster, name)


def remove_pool(cluster: rados.Rados, name: str, confirm: str | None) -> None:
    if not cluster.pool_exists(name):
        raise NotFound(f"no pool '{name}'")
    if confirm != name:
        raise Refused(f"removing pool '{name}' destroys every volume in it: confirm with the pool's name")
    mon_command(cluster, "osd pool rm", pool=name, pool2=name, yes_i_really_really_mean_it=True)
    cluster.wait_for_latest_osdmap()


def check_room(pool: Pool, force: bool, action: str) -> None:
    if pool.used_ratio > FULL_RATIO and not force:
        raise Refused(
            f"pool '{pool.name}' is {pool.used_ratio:.0%} full (over {FULL_RATIO:.0%}): refusing to {action} "
            "without force"
        )
