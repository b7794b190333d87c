"""/vms: define (a typed definition as JSON, or a libvirt domain XML imported through the allowlist), list and
inspect VMs; change their state, migrate them, change their definition, read their console, remove them.

The API only records what a VM should be (the state table in nodeos/state/vmstate.py refuses impossible actions with
409); the node daemons converge to it, and clients follow the VM or the migration task. A VM's domain XML is never
stored: GET shows what `vmrender.render` makes of its definition for its home node.
"""

from __future__ import annotations

import json

import falcon

from pvc.api.context import Context
from pvc.api.models import (
    LogLines,
    LogQuery,
    VmChange,
    VmDefine,
    VmDetail,
    VmListQuery,
    VmMigrate,
    VmModify,
    VmRemoved,
    VmRemoveQuery,
    VmStateChange,
    VmSummary,
)
from pvc.api.resources import Resource
from pvc.api.spec import operation
from pvc.config.schema import API_PREFIX
from pvc.nodeos.formation.ceph import MON_PORT
from pvc.nodeos.provisioner import remove
from pvc.nodeos.state import actions
from pvc.nodeos.state.models import Task, VmSpec, VmStatus
from pvc.nodeos.state.store import ClusterState, NotFound
from pvc.nodeos.state.vmdef import VmDefinition
from pvc.nodeos.state.vmimport import import_xml
from pvc.nodeos.state.vmrender import Host, render

CONSOLE_DIR = "/var/lib/pvc/console"  # where pvcd (with its default --state-dir) has QEMU log serial consoles


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
        "tags": spec.tags,
    }


def detail(ctx: Context, state: ClusterState, spec: VmSpec) -> VmDetail:
    status = state.vm_status(spec.uuid)
    xml = render(spec.definition, host(ctx, state, spec)) if spec.definition else None
    return VmDetail(
        **summary(spec, status),
        definition=spec.definition,
        xml=xml,
        original_xml=spec.original_xml,
        refused=spec.refused,
        reason=status.reason,
        live_nics=status.nics if status.state == "running" else [],
        live_volumes=status.volumes if status.state == "running" else [],
        pending=status.pending if status.state == "running" else [],
    )


def host(ctx: Context, state: ClusterState, spec: VmSpec) -> Host:
    """The node facts the API knows for rendering a VM's XML: the accelerator its home node's pvcd reports, the
    monitors and client.libvirt secret of the cluster, and pvcd's default console log path."""
    keepalive = state.keepalive(spec.node)
    accelerator = keepalive[0].accelerator if keepalive else None
    if accelerator is None:
        accelerator = "tcg" if ctx.cfg.vm.accelerator == "tcg" else "kvm"
    return Host(
        accelerator=accelerator,
        ceph_monitors=tuple((str(ctx.cfg.storage_ip(n)), MON_PORT) for n in ctx.cfg.coordinators),
        ceph_secret_uuid=ctx.ceph_secret_uuid,
        console_log=f"{CONSOLE_DIR}/{spec.uuid}.log",
    )


def definition_of(body: VmModify) -> VmDefinition:
    """The body's definition, or the one its domain XML imports to (VmXmlError, a 400 naming every refused part)."""
    return body.definition if body.definition is not None else import_xml(body.xml or "")


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
                and (not query.tag or query.tag in spec.tags)
            ]
            cached = (generation, json.dumps(out, separators=(",", ":")).encode())
            if len(self._rendered) > 32:
                self._rendered.clear()
            self._rendered[key] = cached
        resp.content_type = falcon.MEDIA_JSON
        resp.data = cached[1]

    @operation(
        summary="Define a VM from its definition, or from a libvirt domain XML (it starts stopped)",
        body=VmDefine,
        response=VmDetail,
        status=201,
        errors=(404, 409),
        tags=["vms"],
        description="A domain XML is imported through PVC's allowlist: anything the definition cannot express "
        "(host files and devices, passthrough, raw QEMU arguments, ...) is a 400 listing every refused part by its "
        "XML path in `problems`. NICs without a MAC get one in the cluster's prefix. A VM without a definition "
        "(refused when PVC typed its VMs) is replaced by a definition with its name.",
    )
    def on_post(self, req: falcon.Request, resp: falcon.Response, body: VmDefine) -> VmDetail:
        state = self.ctx.ready_state()
        spec = actions.define_vm(
            state,
            definition_of(body),
            mac_prefix=self.ctx.vm_mac_prefix,
            node=body.node,
            default_selector=self.ctx.cfg.migration.selector,
        )
        resp.location = f"{API_PREFIX}/vms/{spec.uuid}"
        return detail(self.ctx, state, spec)


class VmResource(Resource):
    @operation(
        summary="One VM, by name or UUID: its definition and the domain XML rendered from it",
        response=VmDetail,
        tags=["vms"],
    )
    def on_get(self, req: falcon.Request, resp: falcon.Response, vm: str) -> VmDetail:
        state = self.ctx.ready_state()
        return detail(self.ctx, state, find(state, vm))

    @operation(
        summary="Replace a VM's definition, from JSON or a domain XML (it applies at the VM's next start)",
        body=VmModify,
        response=VmDetail,
        errors=(404, 409),
        tags=["vms"],
        description="The name and UUID stay the VM's (a different one is a 400). NICs without a MAC get one. "
        "Clears the refusal of a VM without a definition.",
    )
    def on_put(self, req: falcon.Request, resp: falcon.Response, vm: str, body: VmModify) -> VmDetail:
        state = self.ctx.ready_state()
        spec = actions.modify_vm(state, find(state, vm).uuid, definition_of(body), mac_prefix=self.ctx.vm_mac_prefix)
        return detail(self.ctx, state, spec)

    @operation(
        summary="Change where and how a VM runs: placement, migration, tags",
        body=VmChange,
        response=VmDetail,
        errors=(404, 409),
        tags=["vms"],
        description="Edits the VM's definition; fields left out stay as they are, null means the cluster's "
        "default. 409 for a VM without a definition.",
    )
    def on_patch(self, req: falcon.Request, resp: falcon.Response, vm: str, body: VmChange) -> VmDetail:
        state = self.ctx.ready_state()
        spec = actions.change_vm(
            state,
            find(state, vm).uuid,
            placement_changes=body.placement.model_dump(exclude_unset=True) if body.placement else None,
            migration_changes=body.migration.model_dump(exclude_unset=True) if body.migration else None,
            tags=body.tags,
        )
        return detail(self.ctx, state, spec)

    @operation(
        summary="Remove a stopped VM",
        query=VmRemoveQuery,
        response=VmRemoved,
        errors=(404, 409),
        tags=["vms"],
        description="With delete_disks, its volumes go too (its cloud-init seed among them): refused (409) while "
        "it runs, or when one of them is a disk of another VM; a volume that cannot be removed is listed in "
        "`kept` with why.",
    )
    def on_delete(self, req: falcon.Request, resp: falcon.Response, vm: str, query: VmRemoveQuery) -> VmRemoved:
        state = self.ctx.ready_state()
        name = find(state, vm).uuid
        done = remove.remove_vm(state, self.ctx.ceph, name, query.delete_disks)
        return VmRemoved(removed=done.name, volumes=done.volumes, kept=done.kept)


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
        return detail(self.ctx, state, spec)


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
