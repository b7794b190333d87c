"""/health: is the API up, can it reach ZooKeeper, has the cluster formed? (No API key needed: load balancers and
formation's probe ask it.)"""

from __future__ import annotations

import falcon

from pvc.api.context import Context
from pvc.api.models import Health
from pvc.api.resources import Resource
from pvc.api.spec import operation


class HealthResource(Resource):
    def __init__(self, ctx: Context, version: str) -> None:
        super().__init__(ctx)
        self.version = version

    @operation(
        summary="Is the API up, and can it reach ZooKeeper?",
        response=Health,
        auth=False,
        errors=(),
        tags=["cluster"],
        extra_statuses={503: ("ZooKeeper unreachable or the cluster not formed", Health)},
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> Health:
        try:
            formed = self.ctx.state.schema_version() is not None
            zk = True
        except Exception:
            zk = formed = False
        if not (zk and formed):
            resp.status = 503
        return Health(status="ok" if zk and formed else "degraded", zookeeper=zk, formed=formed, version=self.version)
