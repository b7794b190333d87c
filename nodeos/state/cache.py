"""Watch-fed, in-memory views of the cluster state, for readers that look often (the API): every VM's spec and
status (VmCache), every API key's record (ApiKeyCache, read on each request).

kazoo watches keep them current; `generation` changes whenever anything in a view does, so a reader can cache what
it derives from the view (the API caches serialised lists) until the next change.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

from kazoo.client import KazooClient
from kazoo.protocol.states import WatchedEvent, ZnodeStat

from pvc.nodeos.state import layout
from pvc.nodeos.state.models import ApiKeyRecord, VmSpec, VmStatus
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


class ApiKeyCache:
    """Every API key's record, by name. A key revoked or added on any API worker is seen by every other within a
    watch notification (milliseconds), without a ZooKeeper read per request."""

    def __init__(self, zk: KazooClient) -> None:
        self.zk = zk
        self.records: dict[str, ApiKeyRecord] = {}
        self._watched: set[str] = set()
        self._lock = threading.Lock()
        self.ready = threading.Event()

    def start(self, timeout: float = 10) -> bool:
        """Watch the keys; True once the first listing has arrived."""
        self.zk.retry(self.zk.ensure_path, layout.API_KEYS)
        self.zk.ChildrenWatch(layout.API_KEYS, self._children)
        return self.ready.wait(timeout)

    def _children(self, children: list[str]) -> None:
        with self._lock:
            for name in set(self._watched) - set(children):
                self._watched.discard(name)
                self.records.pop(name, None)
            new = [n for n in children if n not in self._watched]
            self._watched.update(new)
        for name in new:
            self.zk.DataWatch(layout.api_key(name), self._record_watch(name))
        self.ready.set()

    def _record_watch(self, name: str):  # type: ignore[no-untyped-def]
        def watch(data, stat, event=None) -> bool:  # type: ignore[no-untyped-def]
            with self._lock:
                if stat is None or name not in self._watched:
                    self.records.pop(name, None)
                    self._watched.discard(name)  # a key made again under this name gets a new watch
                    return False
                self.records[name] = decode(ApiKeyRecord, data)
            return True

        return watch

    def saw(self, name: str, record: ApiKeyRecord | None) -> None:
        """This client wrote the key `name` (None: deleted it): take it now; the watch confirms it shortly."""
        with self._lock:
            if record is None:
                self.records.pop(name, None)
            else:
                self.records[name] = record

    def snapshot(self) -> list[ApiKeyRecord]:
        with self._lock:
            return list(self.records.values())
