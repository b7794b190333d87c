"""Schema versions of the ZooKeeper layout and the hook that migrates one to the next.

MIGRATIONS[n] upgrades a cluster from version n to n + 1; it gets the state and the join key (for what derives from
it). The first daemon to start on a newer version runs the migrations under the "schema" lock; a daemon older than
the cluster's schema refuses to run rather than misread the data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kazoo.exceptions import NodeExistsError
from pydantic import ValidationError

from pvc.config.secrets import vm_mac_prefix
from pvc.nodeos.state import layout, macs
from pvc.nodeos.state.actions import refused_fault_id
from pvc.nodeos.state.models import Refusal, VmName, VmSpec
from pvc.nodeos.state.vmdef import VmDefinition
from pvc.nodeos.state.vmimport import VmXmlError, import_xml

if TYPE_CHECKING:
    from pvc.nodeos.state.store import ClusterState

Migration = Callable[["ClusterState", str], None]


def index_vm_names(state: ClusterState, join_key: str) -> None:
    """1 → 2: build the VM name index (layout.VM_NAMES) from the VMs' records.

    Version 1 checked names by reading every VM, so two concurrent defines could both pass: if two VMs share a name,
    the older one holds it (the other is still there, found by its UUID) and a fault asks for a rename. Safe to run
    again after an interruption: an entry that exists is left as it is."""
    holders: dict[str, VmSpec] = {}
    for spec in sorted(state.vms(), key=lambda s: (s.created, s.uuid)):
        if spec.name in holders:
            state.raise_fault(
                f"vm-name-{spec.uuid}",
                "vm-name-duplicate",
                f"VM {spec.uuid} is named '{spec.name}' like the older VM {holders[spec.name].uuid}, which keeps "
                "the name: remove it and define it again under another name",
            )
            continue
        holders[spec.name] = spec
        with contextlib.suppress(NodeExistsError):
            state.zk.retry(
                state.zk.create, layout.vm_name(spec.name), VmName(uuid=spec.uuid).model_dump_json().encode()
            )


def type_vm_definitions(state: ClusterState, join_key: str) -> None:
    """2 → 3: every VM's domain XML becomes a typed definition, imported through the allowlist (vmimport).

    Its metadata (node limit, selector, autostart, migration method and downtime, tags) moves into the definition,
    and every NIC gets a MAC in the cluster's prefix if it had none, held in the MAC index. Nothing is dropped: a
    VM whose XML is refused keeps its record and that XML (`original_xml`), has no definition (so it cannot start;
    a running one keeps running), and a fault names it and every refused XML path. Defining it again or modifying
    it clears both. Safe to run again after an interruption: a record already in the new shape is left alone."""
    prefix = vm_mac_prefix(join_key)
    for uuid in state.vm_uuids():
        for _attempt in range(50):  # a VM whose record changes meanwhile (an older daemon's write) is read again
            read = state.vm_record(uuid)
            if read is None or "xml" not in read[0]:
                break  # removed, or typed already
            raw, version = read
            spec, made = _typed(state, raw, prefix)
            if state.replace_vm_record(spec, version, sorted(made), {}):
                if spec.definition is None:
                    _refused_fault(state, spec, raw)
                break


def _typed(state: ClusterState, raw: dict[str, Any], prefix: str) -> tuple[VmSpec, set[str]]:
    """The record in schema 3's shape, and the MACs it holds (none when it is refused)."""
    base = VmSpec.model_validate({k: v for k, v in raw.items() if k not in ("xml", "meta")})
    try:
        definition = _with_meta(import_xml(raw["xml"]), raw.get("meta") or {}).changed(name=base.name, uuid=base.uuid)
    except VmXmlError as exc:
        problems = exc.problems
    except ValidationError as exc:
        problems = [(".".join(str(p) for p in e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
    else:
        problems = [
            (f"nics.{i}.mac", f"MAC address {nic.mac} is also used by VM {holder}")
            for i, nic in enumerate(definition.nics)
            if nic.mac and (holder := state.mac_holder(nic.mac)) not in (None, base.uuid)
        ]
        if not problems:
            filled, _made = macs.fill(definition, prefix, lambda m: state.mac_holder(m) not in (None, base.uuid))
            return base.with_definition(filled), {n.mac for n in filled.nics if n.mac}
    refused = [Refusal(path=path, message=message) for path, message in problems]
    return base.model_copy(update={"original_xml": raw["xml"], "refused": refused}), set()


def _with_meta(definition: VmDefinition, meta: dict[str, Any]) -> VmDefinition:
    """The definition with schema 2's VM metadata (kept beside the XML) as its placement, migration and tags."""
    placement = {k: meta[k] for k in ("node_limit", "selector", "autostart") if k in meta}
    migration = {
        new: meta[old]
        for old, new in (("migration_method", "method"), ("max_downtime_ms", "max_downtime_ms"))
        if old in meta
    }
    return definition.changed(
        placement={**definition.placement.model_dump(), **placement},
        migration={**definition.migration.model_dump(), **migration},
        tags=meta.get("tags", definition.tags),
    )


def _refused_fault(state: ClusterState, spec: VmSpec, raw: dict[str, Any]) -> None:
    paths = "; ".join(f"{r.path}: {r.message}" for r in spec.refused)
    meta = [f"{k} {v}" for k, v in (raw.get("meta") or {}).items() if v not in (None, [], False)]
    had = f" Its metadata was: {', '.join(meta)}." if meta else ""
    state.raise_fault(
        refused_fault_id(spec.uuid),
        "vm-refused",
        f"VM '{spec.name}' ({spec.uuid}) cannot start: its domain XML, from before PVC typed VM definitions, is "
        f"refused — {paths}. Its XML is kept (pvc vm info {spec.name} --xml); a running VM keeps running. Define it "
        f"again without these parts (same name) or modify it to clear this.{had}",
    )


MIGRATIONS: dict[int, Migration] = {1: index_vm_names, 2: type_vm_definitions}


class SchemaTooNew(Exception):
    pass


def ensure_schema(
    state: ClusterState, join_key: str, migrations: dict[int, Migration] | None = None, target: int | None = None
) -> int:
    """Create or migrate the layout to `target` (default: layout.SCHEMA_VERSION). Returns the version in force."""
    migrations = MIGRATIONS if migrations is None else migrations
    target = layout.SCHEMA_VERSION if target is None else target
    state.ensure_base()
    with state.lock("schema"):
        version = state.schema_version()
        if version is None:
            state.set_schema_version(target)
            return target
        if version > target:
            raise SchemaTooNew(
                f"the cluster's state is schema {version}, newer than this PVC ({target}); upgrade this node"
            )
        while version < target:
            if version not in migrations:
                raise RuntimeError(f"no migration from schema {version} to {version + 1}")
            migrations[version](state, join_key)
            version += 1
            state.set_schema_version(version)
        return version
