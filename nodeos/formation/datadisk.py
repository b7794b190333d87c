"""The cluster's record of each node's PVCDATA disk: written once formation reaches ZooKeeper (the data step runs
long before ZooKeeper is up on a coordinator, so at boot the disk's own labels and marker file decide; boot/data.py).

It tells an administrator which disk holds each node's state, raises a fault when a node's PVCDATA moved to another
disk, and reminds them to remove `allow_wipe` once it has been used (it has no effect while PVCDATA exists).
"""

from __future__ import annotations

import time

from pvc.config.schema import Node
from pvc.nodeos.boot import data
from pvc.nodeos.state.models import DataDisk
from pvc.nodeos.state.store import ClusterState


def record(state: ClusterState, node: Node, found: data.Outcome) -> list[str]:
    """Record this boot's PVCDATA in the cluster state; returns the console notes about it."""
    ident = found.identity
    now = DataDisk(
        node=node.name,
        serial=ident.serial,
        model=ident.model,
        size=ident.size,
        created=ident.created,
        wiped=list(ident.wiped),
    )
    before = state.data_disk(node.name)
    notes = []
    if before is not None and before.serial != now.serial:
        message = (
            f"node {node.name}'s {data.LABEL} is now on disk serial '{now.serial}' ({found.action}: {found.part}); "
            f"the cluster had it on serial '{before.serial}'"
        )
        notes.append(f"data: {message}")
        state.raise_fault(f"data-disk-{node.name}", "data-disk-changed", message, node=node.name)
    if node.data_disk.allow_wipe and found.action != "create":
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(ident.created)) if ident.created else "before"
        notes.append(
            f"data: data_disk.allow_wipe is still set for node '{node.name}': it has no effect while {data.LABEL} "
            f"exists (made {when} on disk serial '{ident.serial}'); remove it from cluster.toml"
        )
    if before != now:
        state.set_data_disk(now)
    return notes
