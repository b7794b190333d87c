"""Day-two changes of a VM beyond its placement: /vms/{vm}/rename and /vms/{vm}/resources (vCPUs, memory).

Each goes through the typed definition (nodeos/state/actions.py). vCPUs and memory reach a running VM at its next
start: PVC renders a VM's vCPUs and memory as fixed (no maximum above them), so libvirt cannot change them live; the
VM's status lists them under `pending` until then.
"""

from __future__ import annotations

import falcon

from pvc.api.models import VmDetail, VmRename, VmResources
from pvc.api.resources import Resource
from pvc.api.resources.vms import detail, find
from pvc.api.spec import operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.state import actions

TAGS = ["vms"]


class VmRenameResource(Resource):
    @operation(
        summary="Rename a stopped VM",
        body=VmRename,
        response=VmDetail,
        errors=(404, 409),
        tags=TAGS,
        description="Refused (409) while the VM runs or is on its way to or from running: stop it first "
        "(libvirt knows a running domain by its name). A name another VM has is a 409. The UUID, disks and NICs "
        "stay.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, vm: str, body: VmRename) -> VmDetail:
        state = self.ctx.ready_state()
        spec = actions.rename_vm(state, find(state, vm).uuid, body.name)
        resp.location = f"{API_PREFIX}/vms/{spec.uuid}"
        return detail(self.ctx, state, spec)


class VmResourcesResource(Resource):
    @operation(
        summary="Set a VM's vCPUs and memory (a running VM gets them at its next start)",
        body=VmResources,
        response=VmDetail,
        errors=(404, 409),
        tags=TAGS,
        description="Fields left out stay as they are. Memory above the largest node's total memory is a 400 "
        "naming that node. A topology that no longer fits a new vCPU count is dropped unless a new one is given. "
        "A running VM lists the change under `pending` until its next start.",
    )
    def on_patch(self, req: falcon.Request, resp: falcon.Response, vm: str, body: VmResources) -> VmDetail:
        state = self.ctx.ready_state()
        spec = actions.change_vm(
            state,
            find(state, vm).uuid,
            vcpus=body.vcpus,
            topology=body.topology.model_dump() if body.topology else None,
            memory_mib=body.memory_mib,
        )
        return detail(self.ctx, state, spec)
