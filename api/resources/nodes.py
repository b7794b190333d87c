"""/nodes: every node's states and resources; flush, ready, primary, and the node daemon's log.

Flush and ready answer at once with the task the node works through (clients follow it at /tasks/{task_id});
primary asks the coordinators to hand over.
"""

from __future__ import annotations

from collections.abc import Callable

import falcon

from pvc.api.models import LogLines, LogQuery, NodeView
from pvc.api.resources import Resource
from pvc.api.spec import operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.state import actions
from pvc.nodeos.state.models import NodeRecord, Task
from pvc.nodeos.state.store import ClusterState, NotFound
from pvc.nodeos.state.vmstate import TransitionError


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


def _record(state: ClusterState, node: str) -> NodeRecord:
    try:
        return state.node(node)
    except NotFound:
        raise NotFound(f"node '{node}'") from None


class NodesResource(Resource):
    @operation(summary="Every node with its states and resources", response=list[NodeView], errors=(), tags=["nodes"])
    def on_get(self, req: falcon.Request, resp: falcon.Response) -> list[NodeView]:
        state = self.ctx.ready_state()
        now, primary = self.ctx.clock.now_ms(), state.primary()
        return [node_view(state, r, primary, now) for r in state.nodes()]


class NodeResource(Resource):
    @operation(summary="One node", response=NodeView, tags=["nodes"])
    def on_get(self, req: falcon.Request, resp: falcon.Response, node: str) -> NodeView:
        state = self.ctx.ready_state()
        return node_view(state, _record(state, node), state.primary(), self.ctx.clock.now_ms())


def _node_task(
    state: ClusterState, resp: falcon.Response, node: str, start: Callable[[ClusterState, str], Task]
) -> Task:
    _record(state, node)
    task = start(state, node)
    resp.location = f"{API_PREFIX}/tasks/{task.id}"
    return task


class NodeFlushResource(Resource):
    @operation(
        summary="Flush: live-migrate every running VM off the node, one at a time",
        response=Task,
        status=202,
        errors=(404, 409),
        role="operator",
        tags=["nodes"],
        description="Returns the task at once: follow it at /tasks/{task_id}.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, node: str) -> Task:
        return _node_task(self.ctx.ready_state(), resp, node, actions.flush_node)


class NodeReadyResource(Resource):
    @operation(
        summary="Ready: bring back the VMs migrated off the node and start its autostart VMs",
        response=Task,
        status=202,
        errors=(404, 409),
        role="operator",
        tags=["nodes"],
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, node: str) -> Task:
        return _node_task(self.ctx.ready_state(), resp, node, actions.ready_node)


class NodePrimaryResource(Resource):
    @operation(
        summary="Make this coordinator the primary",
        response=NodeView,
        errors=(404, 409),
        tags=["nodes"],
        description="Asks the coordinators to hand over; the answer shows whether the node is the primary yet.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, node: str) -> NodeView:
        state = self.ctx.ready_state()
        record = _record(state, node)
        if not record.coordinator:
            raise TransitionError(f"node {node} is not a coordinator")
        if record.daemon_state != "run":
            raise TransitionError(f"node {node} is {record.daemon_state}")
        if state.primary() != node:
            state.request_primary(node)
        return node_view(state, state.node(node), state.primary(), self.ctx.clock.now_ms())


class NodeLogResource(Resource):
    @operation(summary="The node daemon's recent log lines", query=LogQuery, response=LogLines, tags=["nodes"])
    def on_get(self, req: falcon.Request, resp: falcon.Response, node: str, query: LogQuery) -> LogLines:
        state = self.ctx.ready_state()
        _record(state, node)
        return LogLines(lines=state.node_log(node)[-query.lines :])
