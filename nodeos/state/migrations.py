"""Schema versions of the ZooKeeper layout and the hook that migrates one to the next.

MIGRATIONS[n] upgrades a cluster from version n to n + 1. The first daemon to start on a newer version runs the migrations under the "schema" lock; a daemon older than the
cluster's schema refuses to run rather than misread the data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING

from kazoo.exceptions import NodeExistsError

from pvc.nodeos.state import layout
from pvc.nodeos.state.models import VmName, VmSpec

if TYPE_CHECKING:
    from pvc.nodeos.state.store import ClusterState

Migration = Callable[["ClusterState"], None]


def index_vm_names(state: ClusterState) -> None:
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


MIGRATIONS: dict[int, Migration] = {1: index_vm_names}


class SchemaTooNew(Exception):
    pass


def ensure_schema(
    state: ClusterState, migrations: dict[int, Migration] | None = None, target: int | None = None
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
            migrations[version](state)
            version += 1
            state.set_schema_version(version)
        return version
