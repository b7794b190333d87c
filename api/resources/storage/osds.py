"""/storage/osds: list OSDs, mark them in or out, remove them safely; ask a node to make new ones.

Formatting a disk is the node's own job: adding an OSD records a request in ZooKeeper that pvcd on that node
carries out (nodeos/daemon/osd_requests.py), reporting to the task returned.
"""

from __future__ import annotations

import falcon

from pvc.api.models import OsdAdd, OsdRemoveQuery, OsdStateChange, OsdView, Removed
from pvc.api.resources import Resource
from pvc.api.resources.storage import TAGS
from pvc.api.spec import operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.state import actions
from pvc.nodeos.state.models import OsdRequest, Task
from pvc.nodeos.storage import osds


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


class OsdsResource(Resource):
    @operation(
        summary="OSDs with node, device, size, usage and up/in state", response=list[OsdView], errors=(), tags=TAGS
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[OsdView]:
        return [osd_view(o) for o in self.ctx.ceph.run(osds.list_osds)]

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
        resp.location = f"{API_PREFIX}/tasks/{task.id}"
        return task


class OsdRequestsResource(Resource):
    @operation(summary="Pending and past OSD requests", response=list[OsdRequest], errors=(), tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[OsdRequest]:
        return self.ctx.ready_state().osd_requests()


class OsdResource(Resource):
    @operation(summary="One OSD", response=OsdView, tags=TAGS)
    def on_get(self, req: falcon.Request, resp: falcon.Response, osd: int) -> OsdView:
        return osd_view(self.ctx.ceph.run(lambda c: osds.get_osd(c, osd)))

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
    def on_delete(self, req: falcon.Request, resp: falcon.Response, osd: int, query: OsdRemoveQuery) -> Removed:
        self.ctx.ceph.run(lambda c: osds.remove_osd(c, osd, force=query.force))
        return Removed(removed=f"osd.{osd}")


class OsdStateResource(Resource):
    @operation(
        summary="Mark an OSD in (takes data) or out (its data moves away)",
        body=OsdStateChange,
        response=OsdView,
        errors=(404, 409),
        tags=TAGS,
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, osd: int, body: OsdStateChange) -> OsdView:
        return osd_view(self.ctx.ceph.run(lambda c: osds.set_in(c, osd, body.action == "in")))
