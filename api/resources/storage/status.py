"""/storage: Ceph's health and usage, as the primary coordinator last measured it."""

from __future__ import annotations

import falcon

from pvc.api.resources import Resource
from pvc.api.resources.storage import TAGS
from pvc.api.spec import operation
from pvc.nodeos.state.models import StorageStatus


class StorageStatusResource(Resource):
    @operation(
        summary="Ceph health and usage, as the primary coordinator last measured it",
        response=StorageStatus,
        errors=(),
        tags=TAGS,
        description="Read from ZooKeeper (the primary refreshes it every keepalive interval), so it answers "
        "fast even when Ceph is slow. `updated` says when it was measured; health is `unknown` (updated 0) "
        "before the first measurement and `unreachable` when the primary cannot reach Ceph.",
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> StorageStatus:
        found = self.ctx.ready_state().storage_status()
        if found is None:
            return StorageStatus(
                health="unknown",
                checks={"NO_MEASUREMENT": "not measured yet: the primary coordinator does it every keepalive interval"},
                updated=0,
            )
        return found
