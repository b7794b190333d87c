"""/vms/{vm}/networks: a VM's NICs as attachments to networks. Adding or removing one changes the VM's definition; the
VM's node plugs the NIC into (or out of) a running VM at once, and the VM's status says what waits for its next
start (`pending`). The network must exist (400 naming the NIC and VNI).
"""

from __future__ import annotations

import falcon

from pvc.api.models import VmDetail, VmNicAdd, VmNicQuery
from pvc.api.resources import Resource
from pvc.api.resources.vms import detail, find
from pvc.api.spec import operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.state import actions
from pvc.nodeos.state.vmdef import Nic

TAGS = ["vms"]


class VmNetworksResource(Resource):
    @operation(
        summary="Attach a VM to a network: a new NIC, plugged in at once if the VM runs",
        body=VmNicAdd,
        response=VmDetail,
        status=201,
        errors=(404, 409),
        tags=TAGS,
        description="The NIC gets a MAC in the cluster's prefix unless one is given (409 if another VM holds it). "
        "A network that does not exist is a 400 naming the NIC and VNI. The VM's node hot-plugs the NIC into a "
        "running VM; the VM's `live_nics` shows it once it is in, and `pending` what could not be done live.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, vm: str, body: VmNicAdd) -> VmDetail:
        state = self.ctx.ready_state()
        nic = Nic(network=body.network, mac=body.mac, model=body.model)
        spec, added = actions.add_nic(state, find(state, vm).uuid, nic, mac_prefix=self.ctx.vm_mac_prefix)
        resp.location = f"{API_PREFIX}/vms/{spec.uuid}/networks/{added.network}?mac={added.mac}"
        return detail(self.ctx, state, spec)


class VmNetworkResource(Resource):
    @operation(
        summary="Detach a VM from a network: its NIC there is removed, and unplugged at once if the VM runs",
        query=VmNicQuery,
        response=VmDetail,
        errors=(404,),
        tags=TAGS,
        description="404 if the VM has no NIC on the network; 400 (field `mac`) if it has several and no `mac` "
        "says which. A running guest must release the device: until it has, `pending` says so.",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, vm: str, vni: int, query: VmNicQuery) -> VmDetail:
        state = self.ctx.ready_state()
        spec, _ = actions.remove_nic(state, find(state, vm).uuid, vni, mac=query.mac)
        return detail(self.ctx, state, spec)
