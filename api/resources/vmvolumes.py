"""/vms/{vm}/volumes: a VM's disks as attachments of existing RBD volumes. Adding or removing one changes the VM's
definition; the VM's node plugs the disk into (or out of) a running VM at once (libvirt attach/detach), and the VM's
status says what waits for its next start (`pending`). The volume must exist (400 naming it) and be no other VM's
disk (409 naming that VM). Removing a disk leaves its volume in Ceph.
"""

from __future__ import annotations

import functools

import falcon

from pvc.api.models import VmDetail, VmVolumeAdd
from pvc.api.resources import Resource
from pvc.api.resources.vms import detail, find
from pvc.api.spec import operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.state import actions
from pvc.nodeos.state.vmdef import Disk
from pvc.nodeos.storage import volumes
from pvc.nodeos.storage.ceph import Missing

TAGS = ["vms"]


class VmVolumesResource(Resource):
    @operation(
        summary="Attach an RBD volume to a VM as a disk, hot-plugged at once if the VM runs",
        body=VmVolumeAdd,
        response=VmDetail,
        status=201,
        errors=(404, 409),
        tags=TAGS,
        description="A volume that does not exist is a 400 naming it; a volume that is a disk of another VM (or "
        "of this one) a 409 naming the VM. The VM's node hot-plugs the disk into a running VM; `pending` shows "
        "what could not be done live.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, vm: str, body: VmVolumeAdd) -> VmDetail:
        state = self.ctx.ready_state()
        spec = find(state, vm)
        pool, _, name = body.volume.partition("/")
        try:
            self.ctx.ceph.run(functools.partial(volumes.get_volume, pool=pool, name=name))
        except Missing:
            raise actions.ActionError(
                f"volume {body.volume} does not exist (make it with pvc storage volume add {pool} {name} SIZE)",
                "volume",
            ) from None
        spec = actions.add_disk(state, spec.uuid, Disk(volume=body.volume, bus=body.bus))
        resp.location = f"{API_PREFIX}/vms/{spec.uuid}/volumes/{body.volume}"
        return detail(self.ctx, state, spec)


class VmVolumeResource(Resource):
    @operation(
        summary="Detach an RBD volume from a VM (the volume stays), unplugged at once if the VM runs",
        response=VmDetail,
        errors=(404,),
        tags=TAGS,
        description="404 if the volume is not a disk of the VM. A running guest must release the disk: until it "
        "has, `pending` says so.",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, vm: str, pool: str, volume: str) -> VmDetail:
        state = self.ctx.ready_state()
        spec = actions.remove_disk(state, find(state, vm).uuid, f"{pool}/{volume}")
        return detail(self.ctx, state, spec)
