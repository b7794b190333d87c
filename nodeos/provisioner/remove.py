"""`pvc vm remove VM --delete-disks`: a VM and the volumes it has as disks (its cloud-init seed among them).

Refused while the VM runs, and refused naming the other VM when one of its volumes is a disk of another VM too;
checked before anything is removed. A volume already gone is skipped.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field

from pvc.nodeos.state import actions
from pvc.nodeos.state.store import ClusterState, Conflict
from pvc.nodeos.state.vmstate import TransitionError
from pvc.nodeos.storage import volumes
from pvc.nodeos.storage.ceph import Connection, Missing, StorageError

STOPPED = ("stopped", "failed")


@dataclass
class Removed:
    name: str
    volumes: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)  # "pool/volume: why"


def remove_vm(state: ClusterState, ceph: Connection, name_or_uuid: str, delete_disks: bool) -> Removed:
    spec = state.find_vm(name_or_uuid)
    disks = [d.volume for d in spec.definition.disks] if delete_disks and spec.definition else []
    if delete_disks:
        observed = state.vm_status(spec.uuid).state
        if observed not in STOPPED:
            raise TransitionError(f"VM {spec.name} is {observed}: stop it before removing it with its disks")
        for other in state.vms():
            shared = sorted(set(disks) & {d.volume for d in other.definition.disks} if other.definition else set())
            if other.uuid != spec.uuid and shared:
                raise Conflict(
                    f"volume {shared[0]} of VM {spec.name} is a disk of VM {other.name} too: "
                    "remove it from that VM first, or remove this VM without --delete-disks"
                )
    actions.remove_vm(state, spec.uuid)
    done = Removed(spec.name)
    for volume in disks:
        pool, _, name = volume.partition("/")
        try:
            ceph.run(functools.partial(volumes.remove_volume, pool=pool, name=name))
        except Missing:
            continue
        except StorageError as exc:
            done.kept.append(f"{volume}: {exc}")
            continue
        done.volumes.append(volume)
    return done
