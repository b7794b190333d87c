"""A watch-fed, in-memory view of every VM's spec and status, for readers that list often (the API).

kazoo watches keep it current; `generation` changes whenever anything in it does, so a reader can cache what it
derives from the view (the API caches serialised lists) until the next change.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

from kazoo.client import KazooClient
from kazoo.protocol.states import WatchedEvent, ZnodeStat

from pvc.nodeos.state import layout
from pvc.nodeos.state.models import VmSpec, VmStatus
from pvc.nodeos.state.store import decode


class VmCache:
    def __init__(self, zk: KazooClient) -> None:
        self.zk = zk
        self.specs: dict[str, VmSpec] = {}
        self.statuses: dict[str, VmStatus] = {}
        self._watched: set[str] = set()
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        self.generation = 0
        self.ready = threading.Event()

    def start(self) -> None:
        self.zk.ChildrenWatch(layout.VMS, self._children)
        self.ready.wait(10)

    def _bump(self) -> None:
        self.generation = next(self._counter)

    def _children(self, children: list[str]) -> None:
        with self._lock:
            for vm_uuid in set(self._watched) - set(children):
                self._watched.discard(vm_uuid)
                self.specs.pop(vm_uuid, None)
                self.statuses.pop(vm_uuid, None)
            new = [u for u in children if u not in self._watched]
            self._watched.update(new)
            self._bump()
        for vm_uuid in new:
            self.zk.DataWatch(layout.vm(vm_uuid), self._spec_watch(vm_uuid))
            self.zk.DataWatch(layout.vm_status(vm_uuid), self._status_watch(vm_uuid))
        self.ready.set()

    def _spec_watch(self, vm_uuid: str) -> Callable[..., bool]:
        def watch(data: bytes | None, stat: ZnodeStat | None, event: WatchedEvent | None = None) -> bool:
            with self._lock:
                if stat is None or data is None or vm_uuid not in self._watched:
                    self.specs.pop(vm_uuid, None)
                    self._bump()
                    return False
                self.specs[vm_uuid] = decode(VmSpec, data)
                self._bump()
            return True

        return watch

    def _status_watch(self, vm_uuid: str) -> Callable[..., bool]:
        def watch(data: bytes | None, stat: ZnodeStat | None, event: WatchedEvent | None = None) -> bool:
            with self._lock:
                if stat is None or data is None or vm_uuid not in self._watched:
                    self.statuses.pop(vm_uuid, None)
                    self._bump()
                    return vm_uuid in self._watched
                self.statuses[vm_uuid] = decode(VmStatus, data)
                self._bump()
            return True

        return watch

    def snapshot(self) -> tuple[int, list[tuple[VmSpec, VmStatus]]]:
        with self._lock:
            items = [(spec, self.statuses.get(u, VmStatus())) for u, spec in self.specs.items()]
            return self.generation, items
