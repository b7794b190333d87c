"""/cluster: status (health, primary, counts), faults, maintenance mode and formation progress."""

from __future__ import annotations

from collections import Counter

import falcon

from pvc.api.models import ClusterStatus, Counts, Maintenance, MaintenanceSet, Removed
from pvc.api.resources import Resource
from pvc.api.spec import operation
from pvc.nodeos.state.models import Fault, FormationProgress
from pvc.nodeos.state.store import NotFound


class ClusterResource(Resource):
    @operation(
        summary="Cluster status: health, primary, maintenance, node and VM counts",
        response=ClusterStatus,
        errors=(),
        tags=["cluster"],
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> ClusterStatus:
        state = self.ctx.ready_state()
        nodes = state.nodes()
        vms = state.vms()
        faults = state.faults()
        unhealthy = any(n.daemon_state != "run" for n in nodes) or any(not f.acknowledged for f in faults)
        return ClusterStatus(
            name=self.ctx.cfg.cluster.name,
            health="degraded" if unhealthy else "ok",
            primary=state.primary(),
            maintenance=state.maintenance(),
            nodes=Counts(total=len(nodes), by_state=dict(Counter(n.daemon_state for n in nodes))),
            vms=Counts(total=len(vms), by_state=dict(Counter(v.state for v in vms))),
            faults=len(faults),
        )


class FaultsResource(Resource):
    @operation(summary="Faults the cluster has raised", response=list[Fault], errors=(), tags=["cluster"])
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[Fault]:
        return sorted(self.ctx.ready_state().faults(), key=lambda f: f.last, reverse=True)


class FaultResource(Resource):
    @operation(
        summary="Acknowledge a fault: it stays listed, but no longer makes the cluster degraded",
        response=Fault,
        tags=["cluster"],
        description="The original PVC's `fault ack`. A fault raised again keeps its acknowledgement; delete it "
        "to have it counted again when its cause returns.",
    )
    def on_put(self, req: falcon.Request, resp: falcon.Response, fault_id: str) -> Fault:
        try:
            return self.ctx.ready_state().acknowledge_fault(fault_id)
        except NotFound:
            raise NotFound(f"fault '{fault_id}'") from None

    @operation(summary="Clear a fault", response=Removed, tags=["cluster"])
    def on_delete(self, req: falcon.Request, resp: falcon.Response, fault_id: str) -> Removed:
        state = self.ctx.ready_state()
        if fault_id not in {f.id for f in state.faults()}:
            raise NotFound(f"fault '{fault_id}'")
        state.clear_fault(fault_id)
        return Removed(removed=fault_id)


class MaintenanceResource(Resource):
    @operation(
        summary="Is maintenance mode on? (It pauses fencing.)", response=Maintenance, errors=(), tags=["cluster"]
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> Maintenance:
        return Maintenance(enabled=self.ctx.ready_state().maintenance())

    @operation(
        summary="Turn maintenance mode on or off",
        body=MaintenanceSet,
        response=Maintenance,
        errors=(),
        tags=["cluster"],
    )
    def on_put(self, req: falcon.Request, resp: falcon.Response, body: MaintenanceSet) -> Maintenance:
        self.ctx.ready_state().set_maintenance(body.enabled)
        return Maintenance(enabled=body.enabled)


class FormationResource(Resource):
    @operation(
        summary="Formation progress of every node", response=list[FormationProgress], errors=(), tags=["cluster"]
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[FormationProgress]:
        state = self.ctx.state
        return [p for p in (state.formation(n.name) for n in self.ctx.cfg.nodes) if p is not None]
