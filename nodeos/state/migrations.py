"""Schema versions of the ZooKeeper layout and the hook that migrates one to the next.

MIGRATIONS[n] upgrades a cluster from version n to n + 1. Version 1 is the first; there is nothing to migrate yet.
The first daemon to start on a newer version runs the migrations under the "schema" lock; a daemon older than the
cluster's schema refuses to run rather than misread the data.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pvc.nodeos.state import layout

if TYPE_CHECKING:
    from pvc.nodeos.state.store import ClusterState

Migration = Callable[["ClusterState"], None]
MIGRATIONS: dict[int, Migration] = {}


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
