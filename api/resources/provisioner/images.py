"""/provisioner/images: base images, each an RBD volume with the protected snapshot VM disks are cloned from.

An upload goes through the one upload path of volumes (`storage.volumes.receive`: format checks, sizes, no
leftovers), then pvc.nodeos.provisioner.images snapshots, protects and records it.
"""

from __future__ import annotations

import falcon
import rados

from pvc.api.models import ImageUploadQuery, Removed
from pvc.api.resources import Resource
from pvc.api.resources.provisioner import TAGS, name_param
from pvc.api.resources.storage.volumes import draining, receive
from pvc.api.spec import RequestInvalid, operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.provisioner import images, store
from pvc.nodeos.provisioner.models import ImageView


def only_pool(cluster: rados.Rados) -> str:
    """The pool an upload goes to when it names none: the cluster's only pool (Ceph's own, like .mgr, aside)."""
    pools = sorted(p for p in cluster.list_pools() if not p.startswith("."))
    if len(pools) != 1:
        choices = ", ".join(pools) or "none yet"
        raise RequestInvalid(f"name the pool to store the image in (pools: {choices})", "pool")
    return pools[0]


class ImagesResource(Resource):
    @operation(summary="Every base image", response=list[ImageView], errors=(), tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[ImageView]:
        return self.ctx.provisioner.transaction(store.list_images, write=False)


class ImageResource(Resource):
    @operation(
        summary="One base image, with the templates, profiles and volumes that use it",
        response=ImageView,
        tags=TAGS,
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, image: str) -> ImageView:
        name = name_param(image, "image")
        view = self.ctx.provisioner.transaction(lambda cur: store.get_image(cur, name), write=False)
        return view.model_copy(update={"clones": self.ctx.ceph.run(lambda c: images.clones(c, view))})

    @operation(
        summary="Upload a base image (raw, qcow2 or VMDK)",
        query=ImageUploadQuery,
        request_media_type="application/octet-stream",
        response=ImageView,
        status=201,
        errors=(404, 409),
        tags=TAGS,
        description="The body is the disk image, as for a volume upload (the same checks and limits). It becomes "
        "the volume <pool>/<image> with the protected snapshot 'image', which VM disks are cloned from "
        "(copy-on-write). A taken image name or volume is refused (409) before the body is read; a failed upload "
        "leaves no volume.",
    )
    def on_put(self, req: falcon.Request, resp: falcon.Response, image: str, query: ImageUploadQuery) -> ImageView:
        db = self.ctx.provisioner
        with draining(req):  # refused before the image is stored
            name = name_param(image, "image")
            images.check_free(db, name)
            pool = query.pool or self.ctx.ceph.run(only_pool)
        volume = receive(self.ctx, req, pool, name, query.format, query.force)
        made = self.ctx.ceph.run(lambda c: images.register(db, c, volume, name, query.format, query.description))
        resp.location = f"{API_PREFIX}/provisioner/images/{made.name}"
        return made

    @operation(
        summary="Remove a base image and its volume",
        response=Removed,
        errors=(404, 409),
        tags=TAGS,
        description="Refused (409, naming them) while a storage template names it or volumes are cloned from it.",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, image: str) -> Removed:
        name = name_param(image, "image")
        self.ctx.ceph.run(lambda c: images.remove(self.ctx.provisioner, c, name))
        return Removed(removed=name)
