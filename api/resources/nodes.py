from __future__ import annotations

import time

import falcon

from pvc.api.context import Context
from pvc.api.models import LogLines, LogQuery, NodeAction, NodeView, Task
from pvc.api.spec import operation
from pvc.nodeos.state import actions
from pvc.nodeos.state.models import NodeRecord
from pvc.nodeos.state.store import ClusterState, NotFound
from pvc.nodeos.state.vmstate import TransitionError

FLUSH_WAIT = 600.0
PRIMARY_WAIT = 30.0


def node_view(state: ClusterState, record: NodeRecord, primary: str | None, now_ms: int | None) -> NodeView:
    ka = state.keepalive(record.name)
    age = None
    if ka is not None and now_ms is not None:
        age = round(max(0, now_ms - ka[1]) / 1000, 1)
    return NodeView(
        name=record.name,
        coordinator=record.coordinator,
        primary=record.name == primary,
        daemon_state=record.daemon_state,
        domain_state=record.domain_state,
        keepalive_age_s=age,
        resources=ka[0] if ka else None,
        fence=record.fence,
        task=record.task,
    )


def wait_task(state: ClusterState, task: Task, timeout: float) -> Task:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = state.task(task.id)
        if task.state in ("succeeded", "failed"):
            return task
        time.sleep(0.2)
    return task


def _record(state: ClusterState, node: str) -> NodeRecord:
    try:
        return state.node(node)
    except NotFound:
        raise NotFound(f"node '{node}'") from None


class NodesResource:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation(summary="Every node with its states and resources", response=list[NodeView], errors=(), tags=["nodes"])
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[NodeView]:
        state = self.ctx.ready_state()
        now, primary = self.ctx.clock.now_ms(), state.primary()
        return [node_view(state, r, primary, now) for r in state.nodes()]


class NodeResource:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation(summary="One node", response=NodeView, tags=["nodes"])
    def on_get(self, req: falcon.Request, resp: falcon.Response, node: str) -> NodeView:
        state = self.ctx.ready_state()
        return node_view(state, _record(state, node), state.primary(), self.ctx.clock.now_ms())


class NodeFlushResource:
    def __init__(self, ctx: Context, kind: str) -> None:
        self.ctx, self.kind = ctx, kind

    def _run(self, resp: falcon.Response, node: str, body: NodeAction) -> Task:
        state = self.ctx.ready_state()
        _record(state, node)
        task = (actions.flush_node if self.kind == "flush" else actions.ready_node)(state, node)
        if body.wait:
            resp.status = 200
            return wait_task(state, task, FLUSH_WAIT)
        resp.status = 202
        resp.location = f"/api/v1/tasks/{task.id}"
        return task


class NodeFlush(NodeFlushResource):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, "flush")

    @operation(
        summary="Flush: live-migrate every running VM off the node, one at a time",
        body=NodeAction,
        response=Task,
        status=202,
        extra_statuses={200: ("The finished task (with wait=true)", Task)},
        errors=(404, 409),
        tags=["nodes"],
        description="Returns the task at once (202), or when it ends with wait=true (200).",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, node: str, body: NodeAction) -> Task:
        return self._run(resp, node, body)


class NodeReady(NodeFlushResource):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx, "ready")

    @operation(
        summary="Ready: bring back the VMs migrated off the node and start its autostart VMs",
        body=NodeAction,
        response=Task,
        status=202,
        extra_statuses={200: ("The finished task (with wait=true)", Task)},
        errors=(404, 409),
        tags=["nodes"],
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, node: str, body: NodeAction) -> Task:
        return self._run(resp, node, body)


class NodePrimary:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation(
        summary="Make this coordinator the primary",
        body=NodeAction,
        response=NodeView,
        errors=(404, 409),
        tags=["nodes"],
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, node: str, body: NodeAction) -> NodeView:
        state = self.ctx.ready_state()
        record = _record(state, node)
        if not record.coordinator:
            raise TransitionError(f"node {node} is not a coordinator")
        if record.daemon_state != "run":
            raise TransitionError(f"node {node} is {record.daemon_state}")
        if state.primary() != node:
            state.request_primary(node)
            if body.wait:
                deadline = time.monotonic() + PRIMARY_WAIT
                while time.monotonic() < deadline and state.primary() != node:
                    time.sleep(0.2)
        return node_view(state, state.node(node), state.primary(), self.ctx.clock.now_ms())


class NodeLog:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    @operation(summary="The node daemon's recent log lines", query=LogQuery, response=LogLines, tags=["nodes"])
    def on_get(self, req: falcon.Request, resp: falcon.Response, node: str, query: LogQuery) -> LogLines:
        state = self.ctx.ready_state()
        _record(state, node)
        return LogLines(lines=state.node_log(node)[-query.lines :])
