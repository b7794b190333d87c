"""/provisioner/images: base images, each an RBD volume with the protected snapshot VM disks are cloned from.

An upload goes through the one upload path of volumes (`storage.volumes.receive`: format checks, sizes, no
leftovers), then pvc.nodeos.provisioner.images snapshots, protects and records it.
"""

from __future__ import annotations

import falcon
import rados

from pvc.api.models import ImageUploadQuery, Removed
from pvc.api.resources import Resource
from pvc.api.resources.provisioner import TAGS
from pvc.api.resources.storage.volumes import draining, receive
from pvc.api.spec import RequestInvalid, operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.provisioner import images, store
from pvc.nodeos.provisioner.models import ImageView
from pvc.nodeos.storage import pools


def image_pool(cluster: rados.Rados, named: str | None) -> str:
    """The pool an image goes to: the one named, which must be one of PVC's RBD pools (never Ceph's own, like
    device_health_metrics), or else the cluster's only RBD pool."""
    rbd_pools = sorted(pools.finished_pools(cluster))
    if named is None:
        if len(rbd_pools) != 1:
            raise RequestInvalid(
                f"name the pool to store the image in (pools: {', '.join(rbd_pools) or 'none'})", "pool"
            )
        return rbd_pools[0]
    if named not in rbd_pools and cluster.pool_exists(named):
        raise RequestInvalid(f"pool '{named}' is not an RBD pool (pools: {', '.join(rbd_pools) or 'none'})", "pool")
    return named  # a pool that does not exist is the upload's 404


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
        view = self.ctx.provisioner.transaction(lambda cur: store.get_image(cur, image), write=False)
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
        "(copy-on-write). The pool must be one of PVC's RBD pools (default: the only one). A taken image name or "
        "volume is refused (409) before the body is read; a failed upload leaves no volume.",
    )
    def on_put(self, req: falcon.Request, resp: falcon.Response, image: str, query: ImageUploadQuery) -> ImageView:
        db = self.ctx.provisioner
        with draining(req):  # refused before the image is stored
            images.check_free(db, image)
            pool = self.ctx.ceph.run(lambda c: image_pool(c, query.pool))
        volume = receive(self.ctx, req, pool, image, query.format, query.force)
        made = self.ctx.ceph.run(lambda c: images.register(db, c, volume, image, query.format, query.description))
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
        self.ctx.ceph.run(lambda c: images.remove(self.ctx.provisioner, c, image))
        return Removed(removed=image)
