"""/storage/pools: list, create, change (size, min_size, quota) and remove pools."""

from __future__ import annotations

import falcon
import rados

from pvc.api.models import PoolChange, PoolCreate, PoolRemoveQuery, Removed
from pvc.api.resources import Resource
from pvc.api.resources.storage import TAGS
from pvc.api.spec import operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.state.models import PoolRecord
from pvc.nodeos.state.store import ClusterState
from pvc.nodeos.storage import pools


class PoolsResource(Resource):
    @operation(summary="Pools with their usage", response=list[PoolRecord], errors=(), tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[PoolRecord]:
        return self.ctx.ceph.run(pools.list_pools)

    @operation(
        summary="Create an RBD pool",
        body=PoolCreate,
        response=PoolRecord,
        status=201,
        errors=(409,),
        tags=TAGS,
        description="pgs must be a power of two; size (copies) no more than the OSDs; 1 <= min_size <= size.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, body: PoolCreate) -> PoolRecord:
        created = self.ctx.ceph.run(lambda c: pools.create_pool(c, body.name, body.pgs, body.size, body.min_size))
        resp.location = f"{API_PREFIX}/storage/pools/{created.name}"
        return created


class PoolResource(Resource):
    @operation(summary="One pool", response=PoolRecord, tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, pool: str) -> PoolRecord:
        return self.ctx.ceph.run(lambda c: pools.get_pool(c, pool))

    @operation(
        summary="Change a pool's size (copies), min_size or quota",
        body=PoolChange,
        response=PoolRecord,
        errors=(404, 409),
        tags=TAGS,
        description="Without min_size, a new size sets min_size to size - 1 (at least 1).",
    )
    def on_patch(self, req: falcon.Request, resp: falcon.Response, pool: str, body: PoolChange) -> PoolRecord:
        def change(c: rados.Rados) -> PoolRecord:
            current = pools.get_pool(c, pool)
            if body.size is not None or body.min_size is not None:
                size = body.size if body.size is not None else current.size
                min_size = body.min_size if body.min_size is not None else (None if body.size else current.min_size)
                pools.set_size(c, pool, size, min_size)
            if body.quota_bytes is not None:
                pools.set_quota(c, pool, body.quota_bytes)
            return pools.get_pool(c, pool)

        return self.ctx.ceph.run(change)

    @operation(
        summary="Remove a pool and every volume in it",
        query=PoolRemoveQuery,
        response=Removed,
        errors=(404, 409),
        tags=TAGS,
        description="Refused (409) unless `confirm` repeats the pool's name, for Ceph's own pools (`.mgr`, any name "
        "starting with `.`), while a VM names a volume in it, and while a running client holds one of its volumes.",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, pool: str, query: PoolRemoveQuery) -> Removed:
        used_by = volumes_in_use(self.ctx.ready_state(), pool)
        self.ctx.ceph.run(lambda c: pools.remove_pool(c, pool, query.confirm, used_by))
        return Removed(removed=pool)


def volumes_in_use(state: ClusterState, pool: str) -> dict[str, list[str]]:
    """The volumes of `pool` that VMs name as disks: volume -> the VMs' names."""
    used: dict[str, list[str]] = {}
    for spec in state.vms():
        for disk in spec.definition.volumes if spec.definition else []:
            disk_pool, _, volume = disk.partition("/")
            if disk_pool == pool:
                used.setdefault(volume, []).append(spec.name)
    return used
