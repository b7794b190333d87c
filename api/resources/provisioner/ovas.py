"""/provisioner/ovas: imported OVAs. An upload (pvc.nodeos.provisioner.ova) converts each disk into an RBD volume
with a protected snapshot and makes the system template, network template and profile (kind 'ova') named after
it, which `pvc vm create --profile` makes VMs from; a malformed OVA is refused (400 naming what is wrong) with
nothing left behind."""

from __future__ import annotations

import re

import falcon

from pvc.api.models import OvaUploadQuery, Removed
from pvc.api.resources import Resource
from pvc.api.resources.provisioner import TAGS
from pvc.api.resources.provisioner.images import image_pool
from pvc.api.resources.storage.volumes import Counted, draining
from pvc.api.spec import RequestInvalid, body_stream, operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.provisioner import ova as ova_module
from pvc.nodeos.provisioner import store
from pvc.nodeos.provisioner.models import OvaView
from pvc.nodeos.storage.upload import CephUser


def network_map(text: str | None) -> dict[str, int]:
    """'OVF network=VNI' pairs, comma-separated, as a mapping (400 naming `networks` when one is not)."""
    out: dict[str, int] = {}
    for pair in (text or "").split(","):
        if not pair.strip():
            continue
        network, sep, vni = pair.rpartition("=")
        if not sep or not network.strip() or not re.fullmatch(r"[0-9]{1,8}", vni.strip()):
            raise RequestInvalid(f"networks: '{pair}' is not 'OVF network=VNI'", "networks")
        out[network.strip()] = int(vni)
    return out


class OvasResource(Resource):
    @operation(summary="Every imported OVA", response=list[OvaView], errors=(), tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[OvaView]:
        return [ova_module.view(r) for r in self.ctx.provisioner.transaction(store.list_ovas, write=False)]


class OvaResource(Resource):
    @operation(
        summary="One imported OVA, with its profiles and the VM disks cloned from it", response=OvaView, tags=TAGS
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, ova: str) -> OvaView:
        row = self.ctx.provisioner.transaction(lambda cur: store.get_ova(cur, ova), write=False)
        view = ova_module.view(row)
        return view.model_copy(update={"clones": self.ctx.ceph.run(lambda c: ova_module.clones(c, view))})

    @operation(
        summary="Import an OVA",
        query=OvaUploadQuery,
        request_media_type="application/octet-stream",
        response=OvaView,
        status=201,
        errors=(404, 409, 413),
        tags=TAGS,
        description="The body is the OVA (a tar archive holding an OVF descriptor and its disks: VMDK or qcow2). It "
        "is spooled to the API node's data disk and each disk is converted by qemu-img (sandboxed, with the checks "
        "of an image upload) straight from the archive into the volume <pool>/ova_<ova>_<sda, sdb, ...> with the "
        "protected snapshot 'ova'. The OVF's vCPUs, memory and firmware make the system template <ova>, its NICs "
        "the network template <ova> (each OVF network maps to the PVC network named in `networks`, or of the same "
        "name), and the profile <ova> of kind 'ova' combines them. A taken name is refused (409) before the body "
        "is read; a malformed OVA (not a tar, no or an invalid OVF, a disk it names missing, a disk format not "
        "allowed, an unmapped network) is 400 naming what is wrong, and leaves no volume and no record.",
    )
    def on_put(self, req: falcon.Request, resp: falcon.Response, ova: str, query: OvaUploadQuery) -> OvaView:
        db, state = self.ctx.provisioner, self.ctx.ready_state()
        body = Counted(body_stream(req))
        with draining(req, body):
            ova_module.check_free(db, ova)
            networks = network_map(query.networks)
            pool = self.ctx.ceph.run(lambda c: image_pool(c, query.pool))
            known = {n.name: n.vni for n in state.networks()}
            request = ova_module.Request(ova, pool, query.description, networks)
            user = CephUser(self.ctx.ceph.conffile, self.ctx.ceph.name)
            spool, upload_max = self.ctx.upload_spool, self.ctx.cfg.ceph.upload_max
            made = self.ctx.ceph.run(
                lambda c: ova_module.upload(db, c, user, request, body, req.content_length, known, spool, upload_max)
            )
        resp.location = f"{API_PREFIX}/provisioner/ovas/{made.name}"
        return made

    @operation(
        summary="Remove an OVA, its volumes and the profile and templates its upload made",
        response=Removed,
        errors=(404, 409),
        tags=TAGS,
        description="Refused (409, naming them) while another profile names it or VM disks are cloned from it. "
        "The templates are kept when another profile uses them.",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, ova: str) -> Removed:
        self.ctx.ceph.run(lambda c: ova_module.remove(self.ctx.provisioner, c, ova))
        return Removed(removed=ova)
