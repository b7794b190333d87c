"""/provisioner/templates/{system,network,storage}: what a VM made from a profile gets. A system template holds the
VM definition's CPU, memory, firmware, console, placement and migration fields; a network template its NICs in
order (each on a network, by VNI) and how their MACs are made; a storage template its disks (each a pool and a size,
cloned from an image or empty)."""

from __future__ import annotations

from pvc.api.context import Context
from pvc.api.resources.provisioner.crud import Kind, routes
from pvc.api.spec import RequestInvalid
from pvc.nodeos.provisioner import models, store


def check_nodes(ctx: Context, t: models.SystemTemplate) -> None:
    known = set(ctx.ready_state().node_names())
    for i, node in enumerate(t.node_limit):
        if node not in known:
            raise RequestInvalid(f"node_limit: there is no node '{node}'", f"node_limit.{i}")


def check_networks(ctx: Context, t: models.NetworkTemplate) -> None:
    if not t.nics:
        return
    known = set(ctx.ready_state().network_vnis())
    for i, nic in enumerate(t.nics):
        if nic.network not in known:
            raise RequestInvalid(f"nics.{i}.network: there is no network with VNI {nic.network}", f"nics.{i}.network")


def check_pools(ctx: Context, t: models.StorageTemplate) -> None:
    pools = {d.pool for d in t.disks}
    if not pools:
        return
    missing = ctx.ceph.run(lambda c: {p for p in pools if not c.pool_exists(p)})
    for i, disk in enumerate(t.disks):
        if disk.pool in missing:
            raise RequestInvalid(f"disks.{i}.pool: there is no pool '{disk.pool}'", f"disks.{i}.pool")


SYSTEM = Kind(
    what="system template",
    path="/provisioner/templates/system",
    param="template",
    table=store.SYSTEM,
    change=models.SystemTemplateChange,
    check=check_nodes,
    refs="Every node of node_limit must exist (400 naming it).",
)
NETWORK = Kind(
    what="network template",
    path="/provisioner/templates/network",
    param="template",
    table=store.NETWORK,
    change=models.NetworkTemplateChange,
    check=check_networks,
    refs="Every NIC's network must exist (400 naming the NIC).",
)
STORAGE = Kind(
    what="storage template",
    path="/provisioner/templates/storage",
    param="template",
    table=store.STORAGE,
    change=models.StorageTemplateChange,
    check=check_pools,
    refs="Every disk's pool and image must exist (400 naming the disk).",
)

SystemTemplatesResource, SystemTemplateResource = routes(SYSTEM)
NetworkTemplatesResource, NetworkTemplateResource = routes(NETWORK)
StorageTemplatesResource, StorageTemplateResource = routes(STORAGE)
