"""/storage/pools/{pool}/volumes: RBD images: create, grow, rename, clone, copy, remove; upload and download their
contents as a raw (or, uploading, qcow2 or VMDK) image."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator

import falcon
import rados

from pvc.api.context import Context
from pvc.api.models import (
    DownloadQuery,
    Removed,
    UploadQuery,
    VolumeChange,
    VolumeClone,
    VolumeCopy,
    VolumeCreate,
    VolumeView,
)
from pvc.api.resources import Resource
from pvc.api.resources.storage import TAGS
from pvc.api.spec import RequestInvalid, body_stream, operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.storage import volumes
from pvc.nodeos.storage.upload import Body, CephUser, upload

CHUNK = 1024 * 1024
DRAIN_MAX = 16 * CHUNK  # the most of a refused upload's body read only to deliver the refusal


def volume_view(v: volumes.Volume) -> VolumeView:
    return VolumeView(pool=v.pool, name=v.name, size=v.size, snapshots=v.snapshots, parent=v.parent)


def _located(resp: falcon.Response, vol: volumes.Volume) -> VolumeView:
    resp.location = f"{API_PREFIX}/storage/pools/{vol.pool}/volumes/{vol.name}"
    return volume_view(vol)


class VolumesResource(Resource):
    @operation(summary="Volumes (RBD images) of a pool", response=list[VolumeView], tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, pool: str) -> list[VolumeView]:
        return [volume_view(v) for v in self.ctx.ceph.run(lambda c: volumes.list_volumes(c, pool))]

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
        vol = self.ctx.ceph.run(lambda c: volumes.create_volume(c, pool, body.name, body.size, force=body.force))
        return _located(resp, vol)


class VolumeResource(Resource):
    @operation(summary="One volume", response=VolumeView, tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str) -> VolumeView:
        return volume_view(self.ctx.ceph.run(lambda c: volumes.get_volume(c, pool, volume)))

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

        return volume_view(self.ctx.ceph.run(change))

    @operation(
        summary="Remove a volume and its snapshots",
        response=Removed,
        errors=(404, 409),
        tags=TAGS,
        description="Refused (409) while a running VM holds it or clones depend on its snapshots.",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str) -> Removed:
        self.ctx.ceph.run(lambda c: volumes.remove_volume(c, pool, volume))
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
        vol = self.ctx.ceph.run(
            lambda c: volumes.clone_volume(c, pool, volume, body.snapshot, body.name, force=body.force)
        )
        return _located(resp, vol)


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
        vol = self.ctx.ceph.run(
            lambda c: volumes.copy_volume(c, pool, volume, body.name, dest_pool=body.pool, force=body.force)
        )
        return _located(resp, vol)


class VolumeDataResource(Resource):
    @operation(
        summary="Download a volume (or one of its snapshots) as a raw image",
        query=DownloadQuery,
        response=bytes,
        media_type="application/octet-stream",
        role="admin",  # the whole content of a disk: whatever secrets its guest keeps
        tags=TAGS,
        description="Streams the volume's bytes; Content-Length is its size.",
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, query: DownloadQuery) -> None:
        size, chunks = self.ctx.ceph.run(lambda c: volumes.read_stream(c, pool, volume, query.snapshot))
        resp.content_type = "application/octet-stream"
        resp.content_length = size
        resp.downloadable_as = f"{volume}.raw"
        resp.stream = _guarded(chunks)

    @operation(
        summary="Create a volume from an uploaded raw, qcow2 or VMDK image",
        query=UploadQuery,
        request_media_type="application/octet-stream",
        response=VolumeView,
        status=201,
        errors=(404, 409),
        tags=TAGS,
        description="The body is the image, with a Content-Length or chunked. raw is written into the new volume as "
        "it arrives (zero blocks skipped, so the volume stays sparse). qcow2 and VMDK (a single file: "
        "monolithicSparse or streamOptimized) are spooled to the API node's data disk, inspected by qemu-img in a "
        "sandbox and converted; an image that names a backing file, an external data file or other extent files, "
        "is encrypted, or is not of the declared format is refused (400). The volume is as large as the image "
        "(raw) or its virtual size. Each upload is limited to the pool's room under the 80 % guard (its free "
        "space when forced), cluster.toml's [ceph] upload_max, and the spool's free space: a Content-Length over "
        "the limit is refused (413, with the figure) before the body is read, a chunked body when it passes it, a "
        "virtual size over it with 400. Refused (409) over 80 % pool use unless forced. A failed upload leaves no "
        "volume and no spool file.",
    )
    def on_put(
        self, req: falcon.Request, resp: falcon.Response, pool: str, volume: str, query: UploadQuery
    ) -> VolumeView:
        return _located(resp, receive(self.ctx, req, pool, volume, query.format, query.force))


def receive(ctx: Context, req: falcon.Request, pool: str, volume: str, fmt: str, force: bool) -> volumes.Volume:
    """Volume `pool/volume` from the image in the request's body: the one upload path (volume uploads and
    `pvc image upload` both come here)."""
    body = Counted(body_stream(req))
    user = CephUser(ctx.ceph.conffile, ctx.ceph.name)
    spool, upload_max = ctx.upload_spool, ctx.cfg.ceph.upload_max
    with draining(req, body):
        return ctx.ceph.run(
            lambda c: upload(c, user, pool, volume, body, req.content_length, fmt, force, spool, upload_max)
        )


@contextlib.contextmanager
def draining(req: falcon.Request, body: Counted | None = None) -> Iterator[None]:
    """A refusal raised in the block reaches an uploading client: a client that sends the whole body before it
    reads the answer gets the refusal once the rest is taken; a larger rest is left unread (the connection closes)
    rather than read for nothing."""
    try:
        yield
    except Exception:
        length = req.content_length  # None: a chunked body
        stream = body or Counted(body_stream(req))
        if length is not None and length - stream.count <= DRAIN_MAX:
            while stream.read(CHUNK):
                pass
        raise


class Counted:
    """A body stream that counts what was read from it."""

    def __init__(self, stream: Body) -> None:
        self.stream, self.count = stream, 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.count += len(data)
        return data


def _guarded(chunks: Generator[bytes, None, None]) -> Iterator[bytes]:
    with contextlib.closing(chunks):
        yield from chunks
