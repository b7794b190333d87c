"""/storage/pools/{pool}/volumes/{volume}/snapshots: list, create, protect, remove, and roll the volume back."""

from __future__ import annotations

import falcon
import rados

from pvc.api.models import Removed, SnapshotChange, SnapshotCreate, SnapshotView, VolumeView
from pvc.api.resources import Resource
from pvc.api.resources.storage import TAGS
from pvc.api.resources.storage.volumes import volume_view
from pvc.api.spec import operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.storage import volumes
from pvc.nodeos.storage.ceph import Missing


def snapshot_view(s: volumes.Snapshot) -> SnapshotView:
    return SnapshotView(pool=s.pool, volume=s.volume, name=s.name, size=s.size, protected=s.protected)


class SnapshotsResource(Resource):
    @operation(summary="Snapshots of a volume", response=list[SnapshotView], tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str) -> list[SnapshotView]:
        return [snapshot_view(s) for s in self.ctx.ceph.run(lambda c: volumes.list_snapshots(c, pool, volume))]

    @operation(
        summary="Snapshot a volume",
        body=SnapshotCreate,
        response=SnapshotView,
        status=201,
        errors=(404, 409),
        tags=TAGS,
    )
    def on_post(
        self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, body: SnapshotCreate
    ) -> SnapshotView:
        snap = self.ctx.ceph.run(lambda c: volumes.create_snapshot(c, pool, volume, body.name))
        resp.location = f"{API_PREFIX}/storage/pools/{pool}/volumes/{volume}/snapshots/{snap.name}"
        return snapshot_view(snap)


class SnapshotResource(Resource):
    @operation(summary="One snapshot", response=SnapshotView, tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, snapshot: str) -> SnapshotView:
        snaps = self.ctx.ceph.run(lambda c: volumes.list_snapshots(c, pool, volume))
        for snap in snaps:
            if snap.name == snapshot:
                return snapshot_view(snap)
        raise Missing(f"no snapshot {pool}/{volume}@{snapshot}")

    @operation(
        summary="Protect or unprotect a snapshot",
        body=SnapshotChange,
        response=SnapshotView,
        errors=(404, 409),
        tags=TAGS,
        description="Unprotecting is refused (409) while clones depend on the snapshot.",
    )
    def on_patch(
        self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, snapshot: str, body: SnapshotChange
    ) -> SnapshotView:
        return snapshot_view(
            self.ctx.ceph.run(lambda c: volumes.protect_snapshot(c, pool, volume, snapshot, protect=body.protected))
        )

    @operation(
        summary="Remove a snapshot",
        response=Removed,
        errors=(404, 409),
        tags=TAGS,
        description="Refused (409) while it is protected.",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, snapshot: str) -> Removed:
        self.ctx.ceph.run(lambda c: volumes.remove_snapshot(c, pool, volume, snapshot))
        return Removed(removed=f"{pool}/{volume}@{snapshot}")


class SnapshotRollbackResource(Resource):
    @operation(
        summary="Roll a volume back to a snapshot",
        response=VolumeView,
        errors=(404, 409),
        tags=TAGS,
        description="Refused (409) while a running VM holds the volume.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, snapshot: str) -> VolumeView:
        def rollback(c: rados.Rados) -> volumes.Volume:
            volumes.rollback_snapshot(c, pool, volume, snapshot)
            return volumes.get_volume(c, pool, volume)

        return volume_view(self.ctx.ceph.run(rollback))
