"""/vms: define (from libvirt domain XML), list and inspect VMs; change their state, migrate them, tune their
metadata, read their console, remove them.

The API only records what a VM should be (the state table in nodeos/state/vmstate.py refuses impossible actions with
409); the node daemons converge to it, and clients follow the VM or the migration task.
"""

from __future__ import annotations

import json

import falcon

from pvc.api.context import Context
from pvc.api.models import (
    LogLines,
    LogQuery,
    Removed,
    VmDefine,
    VmDetail,
    VmListQuery,
    VmMetaChange,
    VmMigrate,
    VmStateChange,
    VmSummary,
)
from pvc.api.resources import Resource
from pvc.api.spec import operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.state import actions
from pvc.nodeos.state.models import Task, VmMeta, VmSpec, VmStatus
from pvc.nodeos.state.store import ClusterState, NotFound


def summary(spec: VmSpec, status: VmStatus) -> dict:
    return {
        "uuid": spec.uuid,
        "name": spec.name,
        "state": spec.state,
        "node": spec.node,
        "last_node": spec.last_node,
        "running": status.state,
        "running_on": status.node if status.state == "running" else None,
        "memory_mib": spec.memory_mib,
        "vcpus": spec.vcpus,
        "tags": spec.meta.tags,
    }


def detail(state: ClusterState, spec: VmSpec) -> VmDetail:
    status = state.vm_status(spec.uuid)
    return VmDetail(**summary(spec, status), xml=spec.xml, meta=spec.meta, reason=status.reason)


def find(state: ClusterState, vm: str) -> VmSpec:
    try:
        return state.find_vm(vm)
    except NotFound:
        raise NotFound(f"VM '{vm}'") from None


class VmsResource(Resource):
    def __init__(self, ctx: Context) -> None:
        super().__init__(ctx)
        self._rendered: dict[tuple, tuple[int, bytes]] = {}

    @operation(
        summary="VMs, optionally filtered by node, desired state or tag",
        query=VmListQuery,
        response=list[VmSummary],
        errors=(),
        tags=["vms"],
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, query: VmListQuery) -> None:
        # Served from a watch-fed cache, serialised once per change of the VM set (and per filter).
        generation, items = self.ctx.vm_cache.snapshot()
        key = (query.node, query.state, query.tag)
        cached = self._rendered.get(key)
        if cached is None or cached[0] != generation:
            out = [
                summary(spec, status)
                for spec, status in sorted(items, key=lambda item: item[0].name)
                if (not query.node or spec.node == query.node)
                and (not query.state or spec.state == query.state)
                and (not query.tag or query.tag in spec.meta.tags)
            ]
            cached = (generation, json.dumps(out, separators=(",", ":")).encode())
            if len(self._rendered) > 32:
                self._rendered.clear()
            self._rendered[key] = cached
        resp.content_type = falcon.MEDIA_JSON
        resp.data = cached[1]

    @operation(
        summary="Define a VM from libvirt domain XML (it starts stopped)",
        body=VmDefine,
        response=VmDetail,
        status=201,
        errors=(404, 409),
        tags=["vms"],
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, body: VmDefine) -> VmDetail:
        state = self.ctx.ready_state()
        meta = VmMeta(**body.model_dump(include=set(VmMeta.model_fields)))
        spec = actions.define_vm(
            state, body.xml, node=body.node, meta=meta, default_selector=self.ctx.cfg.migration.selector
        )
        resp.location = f"{API_PREFIX}/vms/{spec.uuid}"
        return detail(state, spec)


class VmResource(Resource):
    @operation(summary="One VM, by name or UUID", response=VmDetail, tags=["vms"])
    def on_get(self, req: falcon.Request, resp: falcon.Response, vm: str) -> VmDetail:
        state = self.ctx.ready_state()
        return detail(state, find(state, vm))

    @operation(summary="Remove a stopped VM", response=Removed, errors=(404, 409), tags=["vms"])
    def on_delete(self, req: falcon.Request, resp: falcon.Response, vm: str) -> Removed:
        state = self.ctx.ready_state()
        spec = find(state, vm)
        actions.remove_vm(state, spec.uuid)
        return Removed(removed=spec.name)


class VmStateResource(Resource):
    @operation(
        summary="Start, shut down, stop, restart or disable a VM",
        body=VmStateChange,
        response=VmDetail,
        errors=(404, 409),
        role="operator",
        tags=["vms"],
        description="409 when the VM's state does not allow the action (the message lists the states "
        "that do). Answers at once, with the new desired state; the VM's node acts on it.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, vm: str, body: VmStateChange) -> VmDetail:
        state = self.ctx.ready_state()
        spec = actions.change_state(state, find(state, vm).uuid, body.action)
        return detail(state, spec)


class VmMigrateResource(Resource):
    @operation(
        summary="Migrate (temporarily), move (for good) or unmigrate (return) a VM",
        body=VmMigrate,
        response=Task,
        status=202,
        errors=(404, 409),
        role="operator",
        tags=["vms"],
        description="Without a target, the VM's (or the cluster's) selector picks the node. A target "
        "without room for the VM's memory is refused (409). Returns the task at once (202); a VM that is not "
        "running only changes its home node, so its task has already succeeded.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, vm: str, body: VmMigrate) -> Task:
        state = self.ctx.ready_state()
        _, task = actions.move_vm(
            state,
            find(state, vm).uuid,
            body.action,
            target=body.target,
            default_selector=self.ctx.cfg.migration.selector,
        )
        resp.location = f"{API_PREFIX}/tasks/{task.id}"
        return task


class VmMetaResource(Resource):
    @operation(
        summary="Change a VM's node limit, selector, autostart, migration method, downtime or tags",
        body=VmMetaChange,
        response=VmDetail,
        tags=["vms"],
    )
    def on_patch(self, req: falcon.Request, resp: falcon.Response, vm: str, body: VmMetaChange) -> VmDetail:
        state = self.ctx.ready_state()
        spec = find(state, vm)
        changes = body.model_dump(exclude_unset=True)
        spec = actions.set_meta(state, spec.uuid, **changes)
        return detail(state, spec)


class VmConsoleResource(Resource):
    @operation(
        summary="The last lines of the VM's serial console",
        query=LogQuery,
        response=LogLines,
        role="operator",  # a guest prints what it likes there: cloud-init's generated passwords, for one
        tags=["vms"],
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, vm: str, query: LogQuery) -> LogLines:
        state = self.ctx.ready_state()
        return LogLines(lines=state.console(find(state, vm).uuid)[-query.lines :])
