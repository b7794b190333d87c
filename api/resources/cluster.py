from __future__ import annotations

from collections import Counter

import falcon

from pvc.api.context import Context
from pvc.api.models import ClusterStatus, Counts, Fault, FormationProgress, Maintenance, MaintenanceSet, Removed
from pvc.api.spec import operation


class ClusterResource:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

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
        unhealthy = [n for n in nodes if n.daemon_state != "run"] or [f for f in faults if not f.acknowledged]
        return ClusterStatus(
            name=self.ctx.cfg.cluster.name,
            health="degraded" if unhealthy else "ok",
            primary=state.primary(),
            maintenance=state.maintenance(),
            nodes=Counts(total=len(nodes), by_state=dict(Counter(n.daemon_state for n in nodes))),
            vms=Counts(total=len(vms), by_state=dict(Counter(v.state for v in vms))),
            faults=len(faults),
        )


class FaultsResource:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation(summary="Faults the cluster has raised", response=list[Fault], errors=(), tags=["cluster"])
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[Fault]:
        return sorted(self.ctx.ready_state().faults(), key=lambda f: f.last, reverse=True)


class FaultResource:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation(summary="Clear a fault", response=Removed, tags=["cluster"])
    def on_delete(self, req: falcon.Request, resp: falcon.Response, fault_id: str) -> Removed:
        state = self.ctx.ready_state()
        if fault_id not in {f.id for f in state.faults()}:
            from pvc.nodeos.state.store import NotFound

            raise NotFound(f"fault '{fault_id}'")
        state.clear_fault(fault_id)
        return Removed(removed=fault_id)


class MaintenanceResource:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

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


class FormationResource:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation(
        summary="Formation progress of every node", response=list[FormationProgress], errors=(), tags=["cluster"]
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[FormationProgress]:
        state = self.ctx.state
        return [p for p in (state.formation(n.name) for n in self.ctx.cfg.nodes) if p is not None]
