"""/storage: Ceph status, pools, volumes (with upload and download), snapshots and OSDs.

Status is read from ZooKeeper (the primary keeps it current); everything else asks Ceph through this worker's
librados connection. Refusals (full pool, last copies, missing confirmation, a volume in use) answer 409 with the
figures; unknown objects 404; bad input 400 naming the field; Ceph unreachable 503.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import TypeVar

import falcon
import rados
import rbd

from pvc.api.context import Context
from pvc.api.models import (
    DownloadQuery,
    OsdAdd,
    OsdRemoveQuery,
    OsdRequest,
    OsdStateChange,
    OsdView,
    PoolChange,
    PoolCreate,
    PoolRemoveQuery,
    PoolView,
    Removed,
    SnapshotChange,
    SnapshotCreate,
    SnapshotView,
    StorageStatus,
    Task,
    UploadQuery,
    VolumeChange,
    VolumeClone,
    VolumeCopy,
    VolumeCreate,
    VolumeView,
)
from pvc.api.spec import RequestInvalid, operation
from pvc.nodeos.state import actions
from pvc.nodeos.storage import osds, pools, status, volumes
from pvc.nodeos.storage.ceph import Exists, Invalid, NotFound, Refused, StorageError, Unavailable

T = TypeVar("T")
CHUNK = 1024 * 1024
TAGS = ["storage"]


class Resource:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def ceph(self, op: Callable[[rados.Rados], T]) -> T:
        """Run `op` on the worker's Ceph connection; a librados failure drops it (the next request reconnects)."""
        cluster = self.ctx.ceph()
        try:
            return op(cluster)
        except rbd.Error as exc:  # what the layer did not foresee: still a storage answer, not a 500
            kind = {
                rbd.InvalidArgument: Invalid,
                rbd.ImageNotFound: NotFound,
                rbd.ImageExists: Exists,
                rbd.ImageBusy: Refused,
                rbd.ImageHasSnapshots: Refused,
            }.get(type(exc), StorageError)
            raise kind(f"Ceph refused: {exc}") from None
        except rados.Error as exc:
            if isinstance(exc, rados.ObjectNotFound):
                raise NotFound(f"Ceph: {exc}") from None
            if isinstance(exc, rados.ObjectExists):
                raise Exists(f"Ceph: {exc}") from None
            if isinstance(exc, rados.PermissionError):
                raise Refused(f"Ceph denied it to this API's Ceph user: {exc}") from None
            self.ctx.drop_ceph()
            raise Unavailable(f"Ceph did not answer: {exc}") from None


def pool_view(p: pools.Pool) -> PoolView:
    return PoolView(
        name=p.name,
        id=p.id,
        size=p.size,
        min_size=p.min_size,
        pgs=p.pgs,
        stored_bytes=p.stored_bytes,
        capacity_bytes=p.capacity_bytes,
        quota_bytes=p.quota_bytes,
        used_percent=round(100.0 * p.used_ratio, 2),
        objects=p.objects,
    )


def volume_view(v: volumes.Volume) -> VolumeView:
    return VolumeView(pool=v.pool, name=v.name, size=v.size, snapshots=v.snapshots, parent=v.parent)


def snapshot_view(s: volumes.Snapshot) -> SnapshotView:
    return SnapshotView(pool=s.pool, volume=s.volume, name=s.name, size=s.size, protected=s.protected)


def osd_view(o: osds.Osd) -> OsdView:
    return OsdView(
        id=o.id,
        node=o.node,
        device=o.device,
        up=o.up,
        inside=o.inside,
        weight=o.weight,
        size_bytes=o.size_bytes,
        used_bytes=o.used_bytes,
        used_percent=round(100.0 * o.used_ratio, 2),
        pgs=o.pgs,
    )


def osd_id(text: str) -> int:
    try:
        return int(text.removeprefix("osd."))
    except ValueError:
        raise RequestInvalid(f"'{text}' is not an OSD id (a number, or osd.N)", "osd") from None


# -- status -------------------------------------------------------------------------------------------------------
class StatusResource(Resource):
    @operation(
        summary="Ceph health and usage, as the primary coordinator last measured it",
        response=StorageStatus,
        errors=(),
        tags=TAGS,
        description="Read from ZooKeeper (the primary refreshes it every keepalive interval), so it answers "
        "fast even when Ceph is slow. `updated` says when it was measured; health is `unknown` (updated 0) "
        "before the first measurement and `unreachable` when the primary cannot reach Ceph.",
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> StorageStatus:
        found = status.read(self.ctx.ready_state())
        if found is None:
            return StorageStatus(
                health="unknown",
                checks={"NO_MEASUREMENT": "not measured yet: the primary coordinator does it every keepalive interval"},
                updated=0,
            )
        return found


# -- pools --------------------------------------------------------------------------------------------------------
class PoolsResource(Resource):
    @operation(summary="Pools with their usage", response=list[PoolView], errors=(), tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[PoolView]:
        return [pool_view(p) for p in self.ceph(pools.list_pools)]

    @operation(
        summary="Create an RBD pool",
        body=PoolCreate,
        response=PoolView,
        status=201,
        errors=(409,),
        tags=TAGS,
        description="pgs must be a power of two; size (copies) no more than the OSDs; 1 <= min_size <= size.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, body: PoolCreate) -> PoolView:
        created = self.ceph(lambda c: pools.create_pool(c, body.name, body.pgs, body.size, body.min_size))
        resp.location = f"/api/v1/storage/pools/{created.name}"
        return pool_view(created)


class PoolResource(Resource):
    @operation(summary="One pool", response=PoolView, tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, pool: str) -> PoolView:
        return pool_view(self.ceph(lambda c: pools.get_pool(c, pool)))

    @operation(
        summary="Change a pool's size (copies), min_size or quota",
        body=PoolChange,
        response=PoolView,
        errors=(404, 409),
        tags=TAGS,
        description="Without min_size, a new size sets min_size to size - 1 (at least 1).",
    )
    def on_patch(self, req: falcon.Request, resp: falcon.Response, pool: str, body: PoolChange) -> PoolView:
        def change(c: rados.Rados) -> pools.Pool:
            current = pools.get_pool(c, pool)
            if body.size is not None or body.min_size is not None:
                size = body.size if body.size is not None else current.size
                min_size = body.min_size if body.min_size is not None else (None if body.size else current.min_size)
                pools.set_size(c, pool, size, min_size)
            if body.quota_bytes is not None:
                pools.set_quota(c, pool, body.quota_bytes)
            return pools.get_pool(c, pool)

        return pool_view(self.ceph(change))

    @operation(
        summary="Remove a pool and every volume in it",
        query=PoolRemoveQuery,
        response=Removed,
        errors=(404, 409),
        tags=TAGS,
        description="Refused (409) unless `confirm` repeats the pool's name.",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, pool: str, query: PoolRemoveQuery) -> Removed:
        self.ceph(lambda c: pools.remove_pool(c, pool, query.confirm))
        return Removed(removed=pool)


# -- volumes ------------------------------------------------------------------------------------------------------
class VolumesResource(Resource):
    @operation(summary="Volumes (RBD images) of a pool", response=list[VolumeView], tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, pool: str) -> list[VolumeView]:
        return [volume_view(v) for v in self.ceph(lambda c: volumes.list_volumes(c, pool))]

    @operation(
        summary="Create a volume",
        body=VolumeCreate,
        response=VolumeView,
        status=201,
        errors=(404, 409),
        tags=TAGS,
        description="Refused (409, with the pool's use) when the pool is over 80 % full, unless forced.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, pool: str, body: VolumeCreate) -> VolumeView:
        vol = self.ceph(lambda c: volumes.create_volume(c, pool, body.name, body.size, force=body.force))
        resp.location = f"/api/v1/storage/pools/{pool}/volumes/{vol.name}"
        return volume_view(vol)


class VolumeResource(Resource):
    @operation(summary="One volume", response=VolumeView, tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str) -> VolumeView:
        return volume_view(self.ceph(lambda c: volumes.get_volume(c, pool, volume)))

    @operation(
        summary="Grow and/or rename a volume",
        body=VolumeChange,
        response=VolumeView,
        errors=(404, 409),
        tags=TAGS,
        description="Shrinking is refused (409: it destroys data); growing is refused over 80 % pool use unless "
        "forced.",
    )
    def on_patch(
        self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, body: VolumeChange
    ) -> VolumeView:
        if body.size is None and body.name is None:
            raise RequestInvalid("give a new size or a new name", "size")

        def change(c: rados.Rados) -> volumes.Volume:
            name = volume
            vol = volumes.get_volume(c, pool, name)
            if body.size is not None:
                vol = volumes.resize_volume(c, pool, name, body.size, force=body.force)
            if body.name is not None and body.name != name:
                vol = volumes.rename_volume(c, pool, name, body.name)
            return vol

        return volume_view(self.ceph(change))

    @operation(
        summary="Remove a volume and its snapshots",
        response=Removed,
        errors=(404, 409),
        tags=TAGS,
        description="Refused (409) while a running VM holds it or clones depend on its snapshots.",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str) -> Removed:
        self.ceph(lambda c: volumes.remove_volume(c, pool, volume))
        return Removed(removed=f"{pool}/{volume}")


class VolumeCloneResource(Resource):
    @operation(
        summary="Clone a snapshot of this volume into a new copy-on-write volume",
        body=VolumeClone,
        response=VolumeView,
        status=201,
        errors=(404, 409),
        tags=TAGS,
        description="The snapshot gets protected (Ceph requires it). Refused over 80 % pool use unless forced.",
    )
    def on_post(
        self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, body: VolumeClone
    ) -> VolumeView:
        vol = self.ceph(lambda c: volumes.clone_volume(c, pool, volume, body.snapshot, body.name, force=body.force))
        resp.location = f"/api/v1/storage/pools/{pool}/volumes/{vol.name}"
        return volume_view(vol)


class VolumeCopyResource(Resource):
    @operation(
        summary="Copy this volume (a full, independent copy)",
        body=VolumeCopy,
        response=VolumeView,
        status=201,
        errors=(404, 409),
        tags=TAGS,
    )
    def on_post(
        self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, body: VolumeCopy
    ) -> VolumeView:
        vol = self.ceph(
            lambda c: volumes.copy_volume(c, pool, volume, body.name, dest_pool=body.pool, force=body.force)
        )
        resp.location = f"/api/v1/storage/pools/{vol.pool}/volumes/{vol.name}"
        return volume_view(vol)


class VolumeDataResource(Resource):
    @operation(
        summary="Download a volume (or one of its snapshots) as a raw image",
        query=DownloadQuery,
        response=bytes,
        media_type="application/octet-stream",
        tags=TAGS,
        description="Streams the volume's bytes; Content-Length is its size.",
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, query: DownloadQuery) -> None:
        size, chunks = self.ceph(lambda c: volumes.read_stream(c, pool, volume, query.snapshot))
        resp.content_type = "application/octet-stream"
        resp.content_length = size
        resp.downloadable_as = f"{volume}.raw"
        resp.stream = _guarded(chunks)

    @operation(
        summary="Create a volume from an uploaded raw or qcow2 image",
        query=UploadQuery,
        request_media_type="application/octet-stream",
        response=VolumeView,
        status=201,
        errors=(404, 409),
        tags=TAGS,
        description="The body is the image (Content-Length required). raw is written as it arrives (zero "
        "blocks skipped, so the volume stays sparse); qcow2 is converted by qemu-img. The volume is as large as "
        "the image (raw) or its virtual size (qcow2). Refused over 80 % pool use unless forced. A failed upload "
        "leaves no volume.",
    )
    def on_put(
        self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, query: UploadQuery
    ) -> VolumeView:
        length = req.content_length
        if not length:
            raise Invalid("send the image as the body, with its Content-Length", "body")
        conffile = self.ctx.ceph_conf
        try:
            vol = self.ceph(
                lambda c: volumes.upload_stream(
                    c, conffile, pool, volume, req.bounded_stream, length, query.format, force=query.force
                )
            )
        except Exception:
            # A client sends the whole body before it reads the answer: take it, so it gets the refusal.
            while req.bounded_stream.read(CHUNK):
                pass
            raise
        resp.location = f"/api/v1/storage/pools/{pool}/volumes/{vol.name}"
        return volume_view(vol)


def _guarded(chunks: Iterator[bytes]) -> Iterator[bytes]:
    with contextlib.closing(chunks):  # type: ignore[type-var]
        yield from chunks


# -- snapshots ----------------------------------------------------------------------------------------------------
class SnapshotsResource(Resource):
    @operation(summary="Snapshots of a volume", response=list[SnapshotView], tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str) -> list[SnapshotView]:
        return [snapshot_view(s) for s in self.ceph(lambda c: volumes.list_snapshots(c, pool, volume))]

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
        snap = self.ceph(lambda c: volumes.create_snapshot(c, pool, volume, body.name))
        resp.location = f"/api/v1/storage/pools/{pool}/volumes/{volume}/snapshots/{snap.name}"
        return snapshot_view(snap)


class SnapshotResource(Resource):
    @operation(summary="One snapshot", response=SnapshotView, tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, snapshot: str) -> SnapshotView:
        snaps = self.ceph(lambda c: volumes.list_snapshots(c, pool, volume))
        for snap in snaps:
            if snap.name == snapshot:
                return snapshot_view(snap)
        raise NotFound(f"no snapshot {pool}/{volume}@{snapshot}")

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
            self.ceph(lambda c: volumes.protect_snapshot(c, pool, volume, snapshot, protect=body.protected))
        )

    @operation(
        summary="Remove a snapshot",
        response=Removed,
        errors=(404, 409),
        tags=TAGS,
        description="Refused (409) while it is protected.",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, snapshot: str) -> Removed:
        self.ceph(lambda c: volumes.remove_snapshot(c, pool, volume, snapshot))
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

        return volume_view(self.ceph(rollback))


# -- OSDs ---------------------------------------------------------------------------------------------------------
class OsdsResource(Resource):
    @operation(
        summary="OSDs with node, device, size, usage and up/in state", response=list[OsdView], errors=(), tags=TAGS
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[OsdView]:
        return [osd_view(o) for o in self.ceph(osds.list_osds)]

    @operation(
        summary="Ask a node to make OSDs of the blank disks matching a selector",
        body=OsdAdd,
        response=Task,
        status=202,
        errors=(404,),
        tags=TAGS,
        description="Formatting a disk is the node's own job: the request is recorded in ZooKeeper "
        "(/pvc/storage/osd_requests) and pvcd on that node carries it out with formation's OSD code, reporting to the "
        "task returned.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, body: OsdAdd) -> Task:
        state = self.ctx.ready_state()
        selector = {k: v for k, v in (("path", body.path), ("model", body.model), ("serial", body.serial)) if v}
        _, task = actions.request_osd(state, body.node, selector)
        resp.location = f"/api/v1/tasks/{task.id}"
        return task


class OsdRequestsResource(Resource):
    @operation(summary="Pending and past OSD requests", response=list[OsdRequest], errors=(), tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[OsdRequest]:
        from pvc.nodeos.state import layout

        state = self.ctx.ready_state()
        found = (state.get_or_none(layout.osd_request(i), OsdRequest) for i in state.children(layout.OSD_REQUESTS))
        return sorted((r for r in found if r), key=lambda r: r.created)


class OsdResource(Resource):
    @operation(summary="One OSD", response=OsdView, tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, osd: str) -> OsdView:
        number = osd_id(osd)
        return osd_view(self.ceph(lambda c: osds.get_osd(c, number)))

    @operation(
        summary="Remove an OSD from the cluster",
        query=OsdRemoveQuery,
        response=Removed,
        errors=(404, 409),
        tags=TAGS,
        description="Refused (409, saying why) when it would leave a pool below min_size, when Ceph says "
        "the OSD is not safe to destroy (data still on it) or not ok to stop, unless forced; and while its "
        "daemon still runs.",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, osd: str, query: OsdRemoveQuery) -> Removed:
        number = osd_id(osd)
        self.ceph(lambda c: osds.remove_osd(c, number, force=query.force))
        return Removed(removed=f"osd.{number}")


class OsdStateResource(Resource):
    @operation(
        summary="Mark an OSD in (takes data) or out (its data moves away)",
        body=OsdStateChange,
        response=OsdView,
        errors=(404, 409),
        tags=TAGS,
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, osd: str, body: OsdStateChange) -> OsdView:
        number = osd_id(osd)
        return osd_view(self.ceph(lambda c: osds.set_in(c, number, body.action == "in")))
