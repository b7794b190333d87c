"""Base images: an uploaded disk image becomes an RBD volume with one protected snapshot, which every VM disk made
from the image is a copy-on-write clone of.

The volume has the image's name, in the pool the upload chose; the snapshot is SNAPSHOT. The bytes arrive through
the storage layer's upload (the one safe path: format inspection, no backing files, size limits); this module makes
the snapshot, protects it and records the image, and removes a half-made image on any failure. An image is not
removed while a storage template names it or a volume is cloned from it.
"""

from __future__ import annotations

import contextlib

import rados

from pvc.nodeos.provisioner import store
from pvc.nodeos.provisioner.db import Cursor, Database
from pvc.nodeos.provisioner.errors import Exists, InUse
from pvc.nodeos.provisioner.models import ImageView
from pvc.nodeos.storage import volumes
from pvc.nodeos.storage.ceph import Missing

SNAPSHOT = "image"


def check_free(db: Database, name: str) -> None:
    """Exists (409) when an image `name` is recorded: said before a byte of its upload is read."""
    if db.transaction(lambda cur: store.image_exists(cur, name), write=False):
        raise Exists(f"image '{name}' already exists", "name")


def register(
    db: Database, cluster: rados.Rados, volume: volumes.Volume, name: str, fmt: str, description: str = ""
) -> ImageView:
    """Snapshot and protect the uploaded `volume` and record it as image `name`. On any failure the volume is
    removed, so a failed upload leaves nothing."""
    try:
        volumes.create_snapshot(cluster, volume.pool, volume.name, SNAPSHOT)
        volumes.protect_snapshot(cluster, volume.pool, volume.name, SNAPSHOT)
        record = ImageView(
            name=name,
            description=description,
            pool=volume.pool,
            volume=volume.name,
            snapshot=SNAPSHOT,
            format=fmt,
            size=volume.size,
            created=0.0,
        )
        return db.transaction(lambda cur: store.add_image(cur, record))
    except BaseException:
        with contextlib.suppress(Exception):
            volumes.remove_volume(cluster, volume.pool, volume.name)
        raise


def clones(cluster: rados.Rados, image: ImageView) -> list[str]:
    """The volumes cloned from the image's snapshot ([] when its volume is gone)."""
    try:
        return volumes.snapshot_clones(cluster, image.pool, image.volume, image.snapshot)
    except Missing:
        return []


def remove(db: Database, cluster: rados.Rados, name: str) -> None:
    """Remove image `name`: its record, then its volume. InUse naming the storage templates and profiles that
    clone it, or the volumes cloned from it."""

    def forget(cur: Cursor) -> None:
        image = store.get_image(cur, name)
        users = store.image_users(cur, name)
        cloned = clones(cluster, image)
        if cloned:
            users.append(f"the VM disks cloned from it ({', '.join(cloned)})")
        if users:
            raise InUse(f"image '{name}' is in use by {'; '.join(users)}: change or remove them first")
        store.remove_image(cur, name)
        with contextlib.suppress(Missing):  # removed by hand, or by an earlier try whose commit was lost
            volumes.remove_volume(cluster, image.pool, image.volume)

    db.transaction(forget)
