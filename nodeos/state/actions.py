"""Day-two changes to the desired state: what the API (and tests) call. Each validates against the current state
and the VM state machine, then writes with compare-and-set, so two concurrent requests cannot both win.

Errors: ActionError (bad input, HTTP 400), TransitionError (impossible in the current state, HTTP 409),
NotFound (HTTP 404), placement.NoTarget (no node can take the VM, HTTP 409).
"""

from __future__ import annotations

import contextlib
import functools
import uuid as uuidlib
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from pvc.config.names import check_name
from pvc.nodeos.state import macs, placement
from pvc.nodeos.state.models import NodeRecord, OsdRequest, Task, VmSpec
from pvc.nodeos.state.store import ClusterState, Conflict, MacTaken, NotFound
from pvc.nodeos.state.vmdef import Disk, Nic, VmDefinition
from pvc.nodeos.state.vmstate import STOPPED_STATES, Action, TransitionError, next_state

MAC_RETRIES = 5  # defines repeated when a MAC made for it was taken meanwhile by a concurrent define


class ActionError(ValueError):
    """Bad input; `field` names the offending request field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


def refused_fault_id(uuid: str) -> str:
    """The fault a VM without a definition carries until it is defined again or modified."""
    return f"vm-refused-{uuid}"


def define_vm(
    state: ClusterState,
    definition: VmDefinition,
    *,
    mac_prefix: str,
    node: str | None = None,
    default_selector: str = "mem",
) -> VmSpec:
    """Store a new VM (state `stop`) on `node`, or on the node the selector picks. It gets a UUID unless the
    definition names one, and a MAC in the cluster's prefix on every NIC that has none.

    A VM that exists without a definition (its XML was refused when PVC typed its VMs) is replaced: the new
    definition, with its name (and its UUID, if given), becomes its definition and clears the refusal."""
    held = _refused_holder(state, definition)
    if held is not None:
        return modify_vm(state, held.uuid, definition, mac_prefix=mac_prefix)
    vm_uuid = definition.uuid or str(uuidlib.uuid4())
    definition = definition.changed(uuid=vm_uuid)
    _check_nodes(state, definition)
    _check_networks(state, definition)
    _check_macs(state, definition, None)
    probe = VmSpec(uuid=vm_uuid, name=definition.name, definition=definition, node="")
    candidates = placement.candidates(state)
    if node is not None:
        if node not in state.node_names():
            raise NotFound(f"node '{node}'")
        placement.check_target(probe, candidates, node)
        home = node
    else:
        home = placement.choose(probe, candidates, default_selector, exclude=set())
    for attempt in range(MAC_RETRIES):
        filled, made = _fill_macs(state, definition, mac_prefix)
        spec = probe.model_copy(update={"node": home, "definition": filled})
        try:
            state.define_vm(spec)
            return spec
        except MacTaken as exc:
            if exc.mac not in made or attempt == MAC_RETRIES - 1:
                raise _mac_error(exc, filled) from None
    raise AssertionError("unreachable")


def modify_vm(state: ClusterState, name_or_uuid: str, definition: VmDefinition, *, mac_prefix: str) -> VmSpec:
    """Replace a VM's definition as a whole (it applies at the VM's next start). The name stays (renaming is its
    own action) and so does the UUID; NICs without a MAC get one. Clears a refused VM's refusal and fault."""
    spec = state.find_vm(name_or_uuid)
    if definition.name != spec.name:
        raise ActionError(f"the definition names '{definition.name}', but the VM is '{spec.name}'", "name")
    if definition.uuid not in (None, spec.uuid):
        raise ActionError(f"the definition's UUID {definition.uuid} is not the VM's ({spec.uuid})", "uuid")
    definition = definition.changed(uuid=spec.uuid)
    _check_nodes(state, definition)
    _check_networks(state, definition)
    _check_macs(state, definition, spec.uuid)
    _check_memory(state, definition.memory_mib)
    _check_volumes(state, definition, spec.uuid)
    for attempt in range(MAC_RETRIES):
        filled, made = _fill_macs(state, definition, mac_prefix, keep=spec)
        try:
            new = state.update_vm(spec.uuid, functools.partial(VmSpec.with_definition, definition=filled))
        except MacTaken as exc:
            if exc.mac not in made or attempt == MAC_RETRIES - 1:
                raise _mac_error(exc, filled) from None
            continue
        state.clear_fault(refused_fault_id(spec.uuid))
        return new
    raise AssertionError("unreachable")


def change_vm(
    state: ClusterState,
    name_or_uuid: str,
    *,
    placement_changes: dict[str, Any] | None = None,
    migration_changes: dict[str, Any] | None = None,
    tags: list[str] | None = None,
    vcpus: int | None = None,
    topology: dict[str, int] | None = None,
    memory_mib: int | None = None,
) -> VmSpec:
    """Change the parts of a VM's definition that say where and how it runs: placement (node limit, selector,
    autostart), migration (method, downtime, timeout) and tags; and its vCPUs (with a topology, or none: a topology
    that no longer fits the new count is dropped) and memory, which a running VM gets at its next start. Memory
    above every node's total is refused naming the largest node. Fields not given stay as they are."""
    spec = state.find_vm(name_or_uuid)
    _definition_of(spec)
    if memory_mib is not None:
        _check_memory(state, memory_mib)

    def apply(s: VmSpec) -> VmSpec:
        d = _definition_of(s)
        fields: dict[str, Any] = {}
        if placement_changes:
            fields["placement"] = {**d.placement.model_dump(), **placement_changes}
        if migration_changes:
            fields["migration"] = {**d.migration.model_dump(), **migration_changes}
        if tags is not None:
            fields["tags"] = tags
        if memory_mib is not None:
            fields["memory_mib"] = memory_mib
        if vcpus is not None:
            fields["vcpus"] = vcpus
            kept = d.topology if d.topology is not None and d.topology.vcpus == vcpus else None
            fields["topology"] = topology if topology is not None else kept
        new = _checked(lambda: d.changed(**fields), "")
        _check_nodes(state, new)
        return s.with_definition(new)

    return state.update_vm(spec.uuid, apply)


def add_nic(state: ClusterState, name_or_uuid: str, nic: Nic, *, mac_prefix: str) -> tuple[VmSpec, Nic]:
    """Add a NIC to a VM's definition (a MAC in the cluster's prefix when it has none); the VM's node plugs it into
    a running VM. Returns the VM and the NIC as stored."""
    spec = state.find_vm(name_or_uuid)
    d = _definition_of(spec)
    index = len(d.nics)
    if nic.mac is not None and nic.mac in {n.mac for n in d.nics}:
        raise Conflict(f"VM '{spec.name}' already has a NIC with MAC {nic.mac}")
    probe = _with_nic(d, nic)
    _check_networks(state, probe, first=index)
    if nic.mac is not None:
        _check_macs(state, probe, spec.uuid)
    for attempt in range(MAC_RETRIES):
        filled, made = _fill_macs(state, probe, mac_prefix, keep=spec)
        added = filled.nics[index]

        def apply(s: VmSpec, added: Nic = added) -> VmSpec:
            current = _definition_of(s)
            if added.mac in {n.mac for n in current.nics}:
                raise Conflict(f"VM '{s.name}' already has a NIC with MAC {added.mac}")
            return s.with_definition(_with_nic(current, added))

        try:
            return state.update_vm(spec.uuid, apply), added
        except MacTaken as exc:
            if exc.mac not in made or attempt == MAC_RETRIES - 1:
                raise _mac_error(exc, filled) from None
    raise AssertionError("unreachable")


def remove_nic(state: ClusterState, name_or_uuid: str, network: int, *, mac: str | None = None) -> tuple[VmSpec, Nic]:
    """Remove a VM's NIC on `network` (the one with `mac`, which must be given when it has several there); the VM's
    node unplugs it from a running VM. Returns the VM and the NIC removed."""
    spec = state.find_vm(name_or_uuid)
    removed = _nic_on(spec, _definition_of(spec), network, mac)

    def apply(s: VmSpec) -> VmSpec:
        d = _definition_of(s)
        gone = _nic_on(s, d, network, removed.mac)
        return s.with_definition(d.without_nic(gone.mac or ""))

    return state.update_vm(spec.uuid, apply), removed


def rename_vm(state: ClusterState, name_or_uuid: str, new_name: str) -> VmSpec:
    """Give a stopped VM a new name (unique among VMs). Refused while it runs or is on its way to or from running:
    libvirt knows a running domain by its name, and renames only domains that are not running."""
    spec = state.find_vm(name_or_uuid)
    try:
        check_name(new_name, "VM name")
    except ValueError as exc:
        raise ActionError(str(exc), "name") from None
    observed = state.vm_status(spec.uuid).state
    if spec.state not in STOPPED_STATES or observed not in ("stopped", "failed"):
        raise TransitionError(
            f"VM '{spec.name}' is {observed} (it wants {spec.state}): stop it before renaming it "
            f"(pvc vm stop {spec.name})"
        )
    if new_name != spec.name:
        with contextlib.suppress(NotFound):
            other = state.find_vm(new_name)
            raise Conflict(f"a VM named '{new_name}' already exists ({other.uuid})")
    return state.rename_vm(spec.uuid, new_name, STOPPED_STATES)  # a start in between is refused, not renamed


def add_disk(state: ClusterState, name_or_uuid: str, disk: Disk) -> VmSpec:
    """Add an RBD volume to a VM's definition (after its other disks); the VM's node plugs it into a running VM.
    The volume's existence is the caller's to check (Ceph); a volume that is a disk of another VM is refused naming
    that VM."""
    spec = state.find_vm(name_or_uuid)
    d = _definition_of(spec)
    if disk.volume in d.volumes:
        raise Conflict(f"VM '{spec.name}' already has volume {disk.volume} as a disk")
    probe = _with_disk(d, disk)
    _check_volumes(state, probe, spec.uuid)

    def apply(s: VmSpec) -> VmSpec:
        current = _definition_of(s)
        if disk.volume in current.volumes:
            raise Conflict(f"VM '{s.name}' already has volume {disk.volume} as a disk")
        return s.with_definition(_with_disk(current, disk))

    return state.update_vm(spec.uuid, apply)


def remove_disk(state: ClusterState, name_or_uuid: str, volume: str) -> VmSpec:
    """Remove an RBD volume from a VM's definition (the volume stays in Ceph); the VM's node unplugs it from a
    running VM."""
    spec = state.find_vm(name_or_uuid)
    if volume not in _definition_of(spec).volumes:
        raise NotFound(f"disk {volume} of VM '{spec.name}'")

    def apply(s: VmSpec) -> VmSpec:
        d = _definition_of(s)
        if volume not in d.volumes:
            raise NotFound(f"disk {volume} of VM '{s.name}'")
        return s.with_definition(d.without_disk(volume))

    return state.update_vm(spec.uuid, apply)


def _with_disk(d: VmDefinition, disk: Disk) -> VmDefinition:
    return _checked(lambda: d.with_disk(disk), "disks")


def _checked(make: Callable[[], VmDefinition], field: str) -> VmDefinition:
    """The definition `make` returns, or ActionError naming the first field it refuses (else `field`)."""
    try:
        return make()
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or field
        raise ActionError(f"{where}: {err['msg'].removeprefix('Value error, ')}", where) from None


def _check_volumes(state: ClusterState, definition: VmDefinition, uuid: str | None) -> None:
    """Refuse a volume that is a disk of another VM (409 naming it): PVC locks each disk to one VM."""
    mine = set(definition.volumes)
    if not mine:
        return
    for other in state.vms():
        if other.uuid == uuid or other.definition is None:
            continue
        shared = sorted(mine & set(other.definition.volumes))
        if shared:
            raise Conflict(f"volume {shared[0]} is a disk of VM '{other.name}': remove it from that VM first")


def _check_memory(state: ClusterState, memory_mib: int) -> None:
    """Refuse memory that no node has (400 naming the largest node); nodes that never reported are not counted."""
    totals = {}
    for name in state.node_names():
        reported = state.keepalive(name)
        if reported is not None and reported[0].mem_total > 0:
            totals[name] = reported[0].mem_total
    if not totals:
        return
    largest = max(sorted(totals), key=lambda n: totals[n])
    if memory_mib > totals[largest]:
        raise ActionError(
            f"memory_mib: {memory_mib} MiB is more than any node has: the largest, {largest}, has "
            f"{totals[largest]} MiB",
            "memory_mib",
        )


def _with_nic(d: VmDefinition, nic: Nic) -> VmDefinition:
    return _checked(lambda: d.with_nic(nic), "nics")


def _nic_on(spec: VmSpec, d: VmDefinition, network: int, mac: str | None) -> Nic:
    on = [n for n in d.nics if n.network == network and (mac is None or n.mac == mac)]
    if not on:
        which = f" with MAC {mac}" if mac else ""
        raise NotFound(f"NIC of VM '{spec.name}' on network {network}{which}")
    if len(on) > 1:
        raise ActionError(
            f"VM '{spec.name}' has {len(on)} NICs on network {network} ({', '.join(n.mac or '?' for n in on)}): "
            "say which with its MAC",
            "mac",
        )
    return on[0]


def _definition_of(spec: VmSpec) -> VmDefinition:
    if spec.definition is None:
        raise TransitionError(
            f"VM '{spec.name}' has no definition ({_refusal_summary(spec)}): define it again with the same name, "
            "or modify it"
        )
    return spec.definition


def _refusal_summary(spec: VmSpec) -> str:
    shown = "; ".join(f"{r.path}: {r.message}" for r in spec.refused[:3])
    more = f"; and {len(spec.refused) - 3} more" if len(spec.refused) > 3 else ""
    return (shown + more) or "it has none"


def _refused_holder(state: ClusterState, definition: VmDefinition) -> VmSpec | None:
    """The VM without a definition that `definition` replaces (same name, or same UUID), if there is one."""
    found = []
    for key in (definition.name, definition.uuid):
        if key is not None:
            with contextlib.suppress(NotFound):
                found.append(state.find_vm(key))
    refused = [s for s in found if s.definition is None]
    if not refused:
        return None
    held = refused[0]
    if held.name != definition.name or definition.uuid not in (None, held.uuid):
        raise Conflict(
            f"VM '{held.name}' ({held.uuid}) has no definition: to replace it, define it with its name and either "
            "its UUID or none"
        )
    return held


def _check_nodes(state: ClusterState, definition: VmDefinition) -> None:
    known = state.node_names()
    for limited in definition.placement.node_limit:
        if limited not in known:
            raise ActionError(
                f"node_limit names '{limited}', which is not a node ({', '.join(known)})", "placement.node_limit"
            )


def _check_networks(state: ClusterState, definition: VmDefinition, first: int = 0) -> None:
    """Refuse a NIC on a network that does not exist (400 naming the NIC and its VNI). `first`: check only the NICs
    from this index on (the ones being added)."""
    missing = [(i, nic) for i, nic in enumerate(definition.nics) if i >= first]
    if not missing:
        return
    known = set(state.network_vnis())
    for i, nic in missing:
        if nic.network not in known:
            which = f"NIC {i}" + (f" ({nic.mac})" if nic.mac else "")
            have = ", ".join(str(v) for v in sorted(known)) or "none"
            raise ActionError(
                f"nics.{i}.network: {which} is on network {nic.network}, which does not exist (networks: {have}); "
                "create it first (pvc network add)",
                f"nics.{i}.network",
            )


def _check_macs(state: ClusterState, definition: VmDefinition, uuid: str | None) -> None:
    """Refuse a given MAC that another VM holds (the transaction would too; this names the VM)."""
    for i, nic in enumerate(definition.nics):
        if nic.mac is not None and (holder := state.mac_holder(nic.mac)) not in (None, uuid):
            raise Conflict(f"nics.{i}.mac: MAC address {nic.mac} is already used by VM {_name_of(state, holder)}")


def _fill_macs(
    state: ClusterState, definition: VmDefinition, prefix: str, keep: VmSpec | None = None
) -> tuple[VmDefinition, set[str]]:
    mine = keep.uuid if keep is not None else None
    return macs.fill(definition, prefix, lambda mac: state.mac_holder(mac) not in (None, mine))


def _mac_error(exc: MacTaken, definition: VmDefinition) -> Conflict:
    index = next((i for i, n in enumerate(definition.nics) if n.mac == exc.mac), 0)
    return Conflict(f"nics.{index}.mac: {exc}")


def _name_of(state: ClusterState, uuid: str) -> str:
    try:
        return f"'{state.vm(uuid).name}' ({uuid})"
    except NotFound:
        return uuid


def change_state(state: ClusterState, name_or_uuid: str, action: Action) -> VmSpec:
    """start / restart / shutdown / stop / disable."""
    spec = state.find_vm(name_or_uuid)

    def apply(s: VmSpec) -> VmSpec:
        new_state = next_state(s.state, action)
        if action in ("start", "restart"):
            _definition_of(s)  # a VM without a definition cannot start: say why
        return s.model_copy(update={"state": new_state})

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


def request_osd(state: ClusterState, node: str, selector: Mapping[str, str]) -> tuple[OsdRequest, Task]:
    """Record "make OSDs of the blank disks on `node` matching `selector`" for that node's formation to act on
    (formatting a disk is the node's own job). Returns the request and the task the node reports to."""
    if node not in state.node_names():
        raise NotFound(f"node '{node}'")
    if not selector:
        raise ActionError("give at least one of path, model or serial to select the disk", "path")
    described = ", ".join(f"{k}={v}" for k, v in sorted(selector.items()))
    task = state.create_task("osd-add", node, total=1, message=f"waiting for {node} to add an OSD on {described}")
    request = OsdRequest(id=task.id, node=node, selector=dict(selector), task=task.id)
    state.put_osd_request(request)
    return request, task
