"""RBD locks: who holds a volume, whether that holder is alive, and breaking a dead node's locks.

Volumes are created with the exclusive-lock feature, so the QEMU that writes a disk holds its lock. librbd's lock
is cooperative (a second writer asks for it and gets it), so the guarantee that one QEMU writes a disk comes from
PVC: a VM runs on one node only, pvcd refuses to start a VM whose disk is held by a live client, and the fencer
blocklists a dead node's clients and breaks their locks before restarting its VMs elsewhere (docs/storage.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import rados
import rbd

from pvc.nodeos.storage.ceph import mon_command
from pvc.nodeos.storage.volumes import image

BLOCKLIST_SECONDS = 3600.0


@dataclass(frozen=True)
class Holder:
    address: str  # "ip:port/nonce" of the client
    alive: bool  # it still watches the volume (its process runs and reaches Ceph)

    @property
    def ip(self) -> str:
        return host_of(self.address)


def host_of(address: str) -> str:
    """'192.0.2.11:0/1234' (or 'v1:...') → '192.0.2.11'."""
    address = address.split(",")[0].strip("[]")
    address = address.split(":", 1)[1] if address.startswith(("v1:", "v2:")) else address
    return address.rsplit(":", 1)[0].strip("[]")


def blocklist(cluster: rados.Rados) -> set[str]:
    entries = mon_command(cluster, "osd blocklist ls") or []
    return {e["addr"] for e in entries if isinstance(e, dict) and "addr" in e}


def _owners(img: rbd.Image) -> list[str]:
    try:
        return [o["owner"] for o in img.lock_get_owners()]
    except (rbd.ImageNotFound, rbd.InvalidArgument):
        return []


def holders(cluster: rados.Rados, pool: str, name: str) -> list[Holder]:
    """The clients holding the volume's exclusive lock, and whether each one is still alive."""
    dead = blocklist(cluster)
    with image(cluster, pool, name) as img:  # read-only images cannot list lock owners; opening takes no lock
        watching = {w["addr"] for w in img.watchers_list()}
        return [Holder(addr, addr in watching and addr not in dead) for addr in _owners(img)]


def live_holder(cluster: rados.Rados, pool: str, name: str) -> Holder | None:
    return next((h for h in holders(cluster, pool, name) if h.alive), None)


def break_locks(cluster: rados.Rados, pool: str, name: str, hosts: set[str]) -> list[str]:
    """Blocklist every client at one of `hosts` that holds the volume's lock, then break that lock, so a new
    QEMU elsewhere takes it at once and the old one (should it still run) can no longer write. Returns the
    addresses broken."""
    broken = []
    with image(cluster, pool, name) as img:
        for owner in img.lock_get_owners():
            address = owner["owner"]
            if host_of(address) not in hosts:
                continue
            mon_command(cluster, "osd blocklist", blocklistop="add", addr=address, expire=BLOCKLIST_SECONDS)
            with contextlib.suppress(rbd.ImageNotFound, rbd.InvalidArgument):
                img.lock_break(owner["mode"], address)
            broken.append(address)
    return broken
