"""Volumes (RBD images) and their snapshots, through python3-rbd."""

from __future__ import annotations

import contextlib
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import rados
import rbd

from pvc.nodeos.storage.ceph import Exists, Invalid, Missing, Refused
from pvc.nodeos.storage.pools import check_room, get_pool

FEATURES = (
    rbd.RBD_FEATURE_LAYERING
    | rbd.RBD_FEATURE_EXCLUSIVE_LOCK
    | rbd.RBD_FEATURE_OBJECT_MAP
    | rbd.RBD_FEATURE_FAST_DIFF
    | rbd.RBD_FEATURE_DEEP_FLATTEN
)
CHUNK = 4 * 1024 * 1024


@dataclass(frozen=True)
class Volume:
    pool: str
    name: str
    size: int
    snapshots: list[str]
    parent: str | None  # "pool/image@snapshot" for a clone


@dataclass(frozen=True)
class Snapshot:
    pool: str
    volume: str
    name: str
    size: int
    protected: bool


@contextlib.contextmanager
def ioctx(cluster: rados.Rados, pool: str) -> Iterator[rados.Ioctx]:
    if not cluster.pool_exists(pool):
        raise Missing(f"no pool '{pool}'")
    ctx = cluster.open_ioctx(pool)
    try:
        yield ctx
    finally:
        ctx.close()


@contextlib.contextmanager
def image(
    cluster: rados.Rados, pool: str, name: str, snapshot: str | None = None, read_only: bool = False
) -> Iterator[rbd.Image]:
    with ioctx(cluster, pool) as ctx:
        try:
            img = rbd.Image(ctx, name, snapshot=snapshot, read_only=read_only)
        except rbd.ImageNotFound:
            what = f"{pool}/{name}" + (f"@{snapshot}" if snapshot else "")
            raise Missing(f"no volume {what}") from None
        try:
            yield img
        finally:
            img.close()


def _describe(pool: str, name: str, img: rbd.Image) -> Volume:
    try:
        parent = img.get_parent_image_spec()
        parent_spec = f"{parent['pool_name']}/{parent['image_name']}@{parent['snap_name']}"
    except rbd.ImageNotFound:
        parent_spec = None
    return Volume(
        pool=pool, name=name, size=img.size(), snapshots=[s["name"] for s in img.list_snaps()], parent=parent_spec
    )


def list_volumes(cluster: rados.Rados, pool: str) -> list[Volume]:
    with ioctx(cluster, pool) as ctx:
        names = sorted(rbd.RBD().list(ctx))
    out = []
    for name in names:
        with contextlib.suppress(Missing), image(cluster, pool, name, read_only=True) as img:
            out.append(_describe(pool, name, img))
    return out


def get_volume(cluster: rados.Rados, pool: str, name: str) -> Volume:
    with image(cluster, pool, name, read_only=True) as img:
        return _describe(pool, name, img)


def create_volume(cluster: rados.Rados, pool: str, name: str, size: int, force: bool = False) -> Volume:
    if size <= 0:
        raise Invalid("a volume needs a positive size", "size")
    check_room(get_pool(cluster, pool), force, f"create volume {name}")
    with ioctx(cluster, pool) as ctx:
        try:
            rbd.RBD().create(ctx, name, size, old_format=False, features=FEATURES)
        except rbd.ImageExists:
            raise Exists(f"volume {pool}/{name} already exists") from None
    return get_volume(cluster, pool, name)


def resize_volume(cluster: rados.Rados, pool: str, name: str, size: int, force: bool = False) -> Volume:
    with image(cluster, pool, name) as img:
        current = img.size()
        if size < current:
            raise Refused(f"shrinking {pool}/{name} from {current} to {size} bytes would destroy data")
        if size > current:
            check_room(get_pool(cluster, pool), force, f"grow volume {name}")
            img.resize(size)
    return get_volume(cluster, pool, name)


def rename_volume(cluster: rados.Rados, pool: str, name: str, new_name: str) -> Volume:
    with ioctx(cluster, pool) as ctx:
        try:
            rbd.RBD().rename(ctx, name, new_name)
        except rbd.ImageNotFound:
            raise Missing(f"no volume {pool}/{name}") from None
        except rbd.ImageExists:
            raise Exists(f"volume {pool}/{new_name} already exists") from None
    return get_volume(cluster, pool, new_name)


def clone_volume(
    cluster: rados.Rados, pool: str, name: str, snapshot: str, new_name: str, force: bool = False
) -> Volume:
    """A copy-on-write clone of a snapshot (which gets protected, as Ceph requires)."""
    check_room(get_pool(cluster, pool), force, f"clone {name}@{snapshot}")
    with image(cluster, pool, name) as img:
        if snapshot not in [s["name"] for s in img.list_snaps()]:
            raise Missing(f"no snapshot {pool}/{name}@{snapshot}")
        if not img.is_protected_snap(snapshot):
            img.protect_snap(snapshot)
    with ioctx(cluster, pool) as ctx:
        try:
            rbd.RBD().clone(ctx, name, snapshot, ctx, new_name, features=FEATURES)
        except rbd.ImageExists:
            raise Exists(f"volume {pool}/{new_name} already exists") from None
    return get_volume(cluster, pool, new_name)


def copy_volume(
    cluster: rados.Rados, pool: str, name: str, new_name: str, dest_pool: str | None = None, force: bool = False
) -> Volume:
    dest_pool = dest_pool or pool
    check_room(get_pool(cluster, dest_pool), force, f"copy {name}")
    with image(cluster, pool, name, read_only=True) as img, ioctx(cluster, dest_pool) as dest:
        try:
            img.copy(dest, new_name, features=FEATURES)
        except rbd.ImageExists:
            raise Exists(f"volume {dest_pool}/{new_name} already exists") from None
    return get_volume(cluster, dest_pool, new_name)


def remove_volume(cluster: rados.Rados, pool: str, name: str) -> None:
    """Remove a volume and its snapshots. Refused while a VM holds it open or while clones depend on it."""
    with image(cluster, pool, name) as img:
        if holder := _live_holder(img):
            raise Refused(f"volume {pool}/{name} is locked by a running VM (client {holder})")
        for snap in img.list_snaps():
            if img.is_protected_snap(snap["name"]):
                if list(img.list_children2()):
                    raise Refused(f"volume {pool}/{name} has clones; remove or flatten them first")
                img.unprotect_snap(snap["name"])
            img.remove_snap(snap["name"])
    with ioctx(cluster, pool) as ctx:
        try:
            rbd.RBD().remove(ctx, name)
        except rbd.ImageBusy:
            raise Refused(f"volume {pool}/{name} is in use") from None


def read_stream(
    cluster: rados.Rados, pool: str, name: str, snapshot: str | None = None
) -> tuple[int, Generator[bytes, None, None]]:
    """(size, chunks) of a volume's (or a snapshot's) raw contents, for streaming to an HTTP client. Missing
    objects raise at once."""
    volume = get_volume(cluster, pool, name)
    size = volume.size
    if snapshot is not None:
        if snapshot not in volume.snapshots:
            raise Missing(f"no snapshot {pool}/{name}@{snapshot}")
        with image(cluster, pool, name, snapshot=snapshot, read_only=True) as img:
            size = img.size()  # the volume may have grown since

    def chunks() -> Generator[bytes, None, None]:
        with image(cluster, pool, name, snapshot=snapshot, read_only=True) as img:
            offset = 0
            while offset < size:
                chunk = img.read(offset, min(CHUNK, size - offset))
                yield chunk
                offset += len(chunk)

    return size, chunks()


# -- snapshots ----------------------------------------------------------------------------------------------------
def list_snapshots(cluster: rados.Rados, pool: str, volume: str) -> list[Snapshot]:
    with image(cluster, pool, volume, read_only=True) as img:
        return [
            Snapshot(pool, volume, s["name"], s["size"], img.is_protected_snap(s["name"])) for s in img.list_snaps()
        ]


def create_snapshot(cluster: rados.Rados, pool: str, volume: str, name: str) -> Snapshot:
    with image(cluster, pool, volume) as img:
        if name in [s["name"] for s in img.list_snaps()]:
            raise Exists(f"snapshot {pool}/{volume}@{name} already exists")
        img.create_snap(name)
    return next(s for s in list_snapshots(cluster, pool, volume) if s.name == name)


def rollback_snapshot(cluster: rados.Rados, pool: str, volume: str, name: str) -> None:
    with image(cluster, pool, volume) as img:
        if holder := _live_holder(img):
            raise Refused(
                f"volume {pool}/{volume} is in use by a running VM (client {holder}): stop it before rolling back"
            )
        _need_snap(img, pool, volume, name)
        img.rollback_to_snap(name)


def protect_snapshot(cluster: rados.Rados, pool: str, volume: str, name: str, protect: bool = True) -> Snapshot:
    with image(cluster, pool, volume) as img:
        _need_snap(img, pool, volume, name)
        if protect and not img.is_protected_snap(name):
            img.protect_snap(name)
        elif not protect and img.is_protected_snap(name):
            if list(img.list_children2()):
                raise Refused(f"snapshot {pool}/{volume}@{name} has clones: it must stay protected")
            img.unprotect_snap(name)
    return next(s for s in list_snapshots(cluster, pool, volume) if s.name == name)


def remove_snapshot(cluster: rados.Rados, pool: str, volume: str, name: str) -> None:
    with image(cluster, pool, volume) as img:
        _need_snap(img, pool, volume, name)
        if img.is_protected_snap(name):
            raise Refused(f"snapshot {pool}/{volume}@{name} is protected: unprotect it first")
        img.remove_snap(name)


def _live_holder(img: rbd.Image) -> str | None:
    """The address of a live client holding the image's exclusive lock (it still watches the image)."""
    watching = {w["addr"] for w in img.watchers_list()}
    return next((o["owner"] for o in img.lock_get_owners() if o["owner"] in watching), None)


def _need_snap(img: rbd.Image, pool: str, volume: str, name: str) -> None:
    if name not in [s["name"] for s in img.list_snaps()]:
        raise Missing(f"no snapshot {pool}/{volume}@{name}")
