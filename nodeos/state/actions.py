"""Day-two changes to the desired state: what the API (and tests) call. Each validates against the current state
and the VM state machine, then writes with compare-and-set, so two concurrent requests cannot both win.

Errors: ActionError (bad input, HTTP 400), TransitionError (impossible in the current state, HTTP 409),
NotFound (HTTP 404), placement.NoTarget (no node can take the VM, HTTP 409).
"""

from __future__ import annotations

import uuid as uuidlib

from pvc.nodeos.state import domxml, placement
from pvc.nodeos.state.models import NodeRecord, OsdRequest, Task, VmMeta, VmSpec
from pvc.nodeos.state.store import ClusterState, NotFound
from pvc.nodeos.state.vmstate import Action, TransitionError, next_state


class ActionError(ValueError):
    """Bad input; `field` names the offending request field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def define_vm(
    state: ClusterState, xml: str, *, node: str | None = None, meta: VmMeta | None = None, default_selector: str = "mem"
) -> VmSpec:
    """Store a new VM (state `stop`) on `node`, or on the node the selector picks."""
    try:
        facts = domxml.parse(xml)
    except domxml.DomainXmlError as exc:
        raise ActionError(str(exc), "xml") from None
    vm_uuid = facts.uuid or str(uuidlib.uuid4())
    if not facts.uuid:
        xml = domxml.with_uuid(xml, vm_uuid)
    meta = meta or VmMeta()
    known = state.node_names()
    for limited in meta.node_limit:
        if limited not in known:
            raise ActionError(f"node_limit names '{limited}', which is not a node ({', '.join(known)})", "node_limit")
    probe = VmSpec(
        uuid=vm_uuid, name=facts.name, xml=xml, node="", memory_mib=facts.memory_mib, vcpus=facts.vcpus, meta=meta
    )
    candidates = placement.candidates(state)
    if node is not None:
        if node not in known:
            raise NotFound(f"node '{node}'")
        placement.check_target(probe, candidates, node)
        home = node
    else:
        home = placement.choose(probe, candidates, default_selector, exclude=set())
    spec = probe.model_copy(update={"node": home})
    state.define_vm(spec)
    return spec


def change_state(state: ClusterState, name_or_uuid: str, action: Action) -> VmSpec:
    """start / restart / shutdown / stop / disable."""
    spec = state.find_vm(name_or_uuid)

    def apply(s: VmSpec) -> VmSpec:
        return s.model_copy(update={"state": next_state(s.state, action)})

    return state.update_vm(spec.uuid, apply)


def move_vm(
    state: ClusterState, name_or_uuid: str, action: Action, target: str | None = None, default_selector: str = "mem"
) -> tuple[VmSpec, Task]:
    """migrate (temporary: remembers the node to return to), move (permanent) or unmigrate (return).

    Returns the new spec and a task: the node that moves a running VM reports to it; a VM that is not running
    only changes home, so its task is done at once.
    """
    spec = state.find_vm(name_or_uuid)
    candidates = placement.candidates(state)
    if action == "unmigrate":
        if spec.last_node is None:
            raise TransitionError(f"VM '{spec.name}' has not been migrated: there is no node to return it to")
        target = spec.last_node
    if target is not None:
        if target == spec.node:
            raise TransitionError(f"VM '{spec.name}' is already on {target}")
        placement.check_target(spec, candidates, target)
    else:
        target = placement.choose(spec, candidates, default_selector, exclude={spec.node})
    next_state(spec.state, action)  # refuse before creating a task
    task = state.create_task(action, spec.name, total=1, message=f"to {target}")

    def apply(s: VmSpec) -> VmSpec:
        new_state = next_state(s.state, action)
        last = (s.last_node or s.node) if action == "migrate" else None
        return s.model_copy(update={"state": new_state, "node": target, "last_node": last, "task": task.id})

    try:
        new = state.update_vm(spec.uuid, apply)
    except Exception as exc:
        state.update_task(task.id, state="failed", message=str(exc))
        raise
    if new.state != "migrate":
        task = state.update_task(task.id, state="succeeded", progress=1, message=f"home node is now {target}")
    else:
        task = state.update_task(task.id, state="running")
    return new, task


def remove_vm(state: ClusterState, name_or_uuid: str) -> None:
    spec = state.find_vm(name_or_uuid)
    next_state(spec.state, "remove")
    state.remove_vm(spec.uuid)


def set_meta(state: ClusterState, name_or_uuid: str, **changes: object) -> VmSpec:
    spec = state.find_vm(name_or_uuid)
    known = state.node_names()
    for limited in changes.get("node_limit") or []:  # type: ignore[union-attr]
        if limited not in known:
            raise ActionError(f"node_limit names '{limited}', which is not a node", "node_limit")
    return state.update_vm(spec.uuid, lambda s: s.model_copy(update={"meta": s.meta.model_copy(update=changes)}))


def _node_request(state: ClusterState, name: str, kind: str, allowed_from: set[str], new: str) -> Task:
    record = state.node(name)
    if record.domain_state not in allowed_from:
        raise TransitionError(
            f"node {name} is {record.domain_state}; {kind} needs it to be " + " or ".join(sorted(allowed_from))
        )
    if record.daemon_state != "run":
        raise TransitionError(f"node {name} is {record.daemon_state}, not running: it cannot {kind} itself")
    task = state.create_task(kind, name)

    def request(r: NodeRecord) -> NodeRecord:
        if r.domain_state not in allowed_from:
            raise TransitionError(f"node {name} became {r.domain_state}")
        return r.model_copy(update={"domain_state": new, "task": task.id})

    state.update_node(name, request)
    return task


def flush_node(state: ClusterState, name: str) -> Task:
    return _node_request(state, name, "flush", {"ready", "unflushing", "flushing"}, "flushing")


def ready_node(state: ClusterState, name: str) -> Task:
    return _node_request(state, name, "ready", {"flushed", "flushing"}, "unflushing")


def request_osd(state: ClusterState, node: str, selector: dict[str, str]) -> tuple[OsdRequest, Task]:
    """Record "make OSDs of the blank disks on `node` matching `selector`" for that node's formation to act on
    (formatting a disk is the node's own job). Returns the request and the task the node reports to."""
    if node not in state.node_names():
        raise NotFound(f"node '{node}'")
    if not selector:
        raise ActionError("give at least one of path, model or serial to select the disk", "path")
    described = ", ".join(f"{k}={v}" for k, v in sorted(selector.items()))
    task = state.create_task("osd-add", node, total=1, message=f"waiting for {node} to add an OSD on {described}")
    request = OsdRequest(id=task.id, node=node, selector=selector, task=task.id)
    state.put_osd_request(request)
    return request, task
