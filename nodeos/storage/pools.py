"""Pools: list with usage, create, change size, remove (only with the pool's name as confirmation)."""

from __future__ import annotations

from dataclasses import dataclass

import rados
import rbd

from pvc.nodeos.storage.ceph import Exists, Invalid, NotFound, Refused, mon_command

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
    quota_bytes: int = 0  # 0: no quota

    @property
    def capacity_bytes(self) -> int:
        """What the pool can hold: what it stores plus what it may still take, capped by its quota."""
        total = self.stored_bytes + self.max_avail_bytes
        return min(total, self.quota_bytes) if self.quota_bytes else total

    @property
    def used_ratio(self) -> float:
        return min(1.0, self.stored_bytes / self.capacity_bytes) if self.capacity_bytes else 0.0


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
                quota_bytes=detail.get("quota_max_bytes", 0) or 0,
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
        raise Invalid(f"pgs must be a power of two, got {pgs}", "pgs")
    if not 1 <= min_size <= size:
        raise Invalid(f"min_size must be between 1 and size ({size}), got {min_size}", "min_size")
    if cluster.pool_exists(name):
        raise Exists(f"pool '{name}' already exists")
    _check_osds(cluster, size)
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
    _check_osds(cluster, size)
    min_size = min_size if min_size is not None else max(1, size - 1)
    if not 1 <= min_size <= size:
        raise Invalid(f"min_size must be between 1 and size ({size}), got {min_size}", "min_size")
    flags = {"yes_i_really_mean_it": True} if size == 1 else {}
    mon_command(cluster, "osd pool set", pool=name, var="size", val=str(size), **flags)
    mon_command(cluster, "osd pool set", pool=name, var="min_size", val=str(min_size))
    return get_pool(cluster, name)


def _check_osds(cluster: rados.Rados, size: int) -> None:
    if size < 1:
        raise Invalid(f"size must be at least 1, got {size}", "size")
    osds = mon_command(cluster, "osd stat")["num_osds"]
    if size > osds:
        raise Invalid(f"size {size} needs {size} OSDs; the cluster has {osds}", "size")


def set_quota(cluster: rados.Rados, name: str, max_bytes: int) -> Pool:
    """Cap the pool at `max_bytes` (0: no cap). The 80 % rule counts against the cap."""
    if not cluster.pool_exists(name):
        raise NotFound(f"no pool '{name}'")
    if max_bytes < 0:
        raise Invalid(f"quota must be 0 (none) or a positive number of bytes, got {max_bytes}", "quota_bytes")
    mon_command(cluster, "osd pool set-quota", pool=name, field="max_bytes", val=str(max_bytes))
    return get_pool(cluster, name)


def remove_pool(cluster: rados.Rados, name: str, confirm: str | None) -> None:
    if name not in mon_command(cluster, "osd pool ls"):  # the mon's word: this client's map may be older
        raise NotFound(f"no pool '{name}'")
    if confirm != name:
        raise Refused(f"removing pool '{name}' destroys every volume in it: confirm with the pool's name")
    mon_command(cluster, "osd pool rm", pool=name, pool2=name, yes_i_really_really_mean_it=True)
    cluster.wait_for_latest_osdmap()


def check_room(pool: Pool, force: bool, action: str) -> None:
    if pool.used_ratio > FULL_RATIO and not force:
        raise Refused(
            f"pool '{pool.name}' is {pool.used_ratio:.0%} full ({pool.stored_bytes} of {pool.capacity_bytes} bytes, "
            f"over {FULL_RATIO:.0%}): refusing to {action} without force"
        )
