"""Typed accessors for the cluster state in ZooKeeper.

`ClusterState` wraps one kazoo client. Reads return (record, znode version) where a caller may want to write back
conditionally; `update()` is the compare-and-set loop every read-modify-write uses; writes that touch several
znodes go through one ZooKeeper transaction.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from kazoo.client import KazooClient
from kazoo.exceptions import BadVersionError, LockTimeout, NodeExistsError, NoNodeError
from kazoo.security import make_digest_acl
from pydantic import BaseModel

from pvc.nodeos.state import layout
from pvc.nodeos.state.models import (
    Fault,
    FormationProgress,
    Keepalive,
    LogRing,
    Maintenance,
    NodeRecord,
    OsdRequest,
    Primary,
    StorageStatus,
    Task,
    VmSpec,
    VmStatus,
    now,
)

M = TypeVar("M", bound=BaseModel)

LOG_LINES = 1000  # lines kept in a LogRing (console logs, node logs)
LOG_BYTES = 256 * 1024  # and at most this many bytes of them
RETRY_SECONDS = 15.0  # how long a read or write waits for a lost ZooKeeper connection to come back


class NotFound(Exception):
    pass


class Conflict(Exception):
    """A concurrent writer won a compare-and-set too many times, or an object already exists."""


def encode(record: BaseModel) -> bytes:
    return record.model_dump_json().encode()


def decode(model: type[M], data: bytes) -> M:
    return model.model_validate_json(data or b"{}")


def make_client(
    hosts: str, *, user: str | None = None, password: str | None = None, timeout: float = 3.0
) -> KazooClient:
    """A kazoo client for PVC: digest auth and an ACL that only the cluster's credentials can use.

    `client.retry(...)` (used by ClusterState's reads and writes) repeats an operation cut off by a lost
    connection until the client reconnects, for up to RETRY_SECONDS; then the caller gets the error.
    """
    kwargs: dict = {
        "hosts": hosts,
        "timeout": timeout,
        "connection_retry": {"max_tries": -1, "max_delay": 1},
        "command_retry": {"max_tries": -1, "delay": 0.1, "max_delay": 1, "deadline": RETRY_SECONDS},
    }
    if user and password:
        kwargs["auth_data"] = [("digest", f"{user}:{password}")]
        kwargs["default_acl"] = [make_digest_acl(user, password, all=True)]
    return KazooClient(**kwargs)


class ClusterState:
    def __init__(self, zk: KazooClient) -> None:
        self.zk = zk

    # -- generic -------------------------------------------------------------------------------------------
    def get(self, path: str, model: type[M]) -> tuple[M, int]:
        try:
            data, stat = self.zk.retry(self.zk.get, path)
        except NoNodeError:
            raise NotFound(path) from None
        return decode(model, data), stat.version

    def get_or_none(self, path: str, model: type[M]) -> M | None:
        try:
            return self.get(path, model)[0]
        except NotFound:
            return None

    def put(self, path: str, record: BaseModel, version: int = -1) -> None:
        """Write `record`, creating the znode (and parents) if needed; with `version`, only over that version."""
        try:
            self.zk.retry(self.zk.set, path, encode(record), version=version)
        except NoNodeError:
            if version != -1:
                raise NotFound(path) from None
            with contextlib.suppress(NodeExistsError):
                self.zk.retry(self.zk.create, path, encode(record), makepath=True)
                return
            self.zk.retry(self.zk.set, path, encode(record))

    def update(self, path: str, model: type[M], change: Callable[[M], M | None], retries: int = 50) -> M:
        """Read-modify-write with compare-and-set. `change` returns the new record (None: no write)."""
        for attempt in range(retries):
            if attempt:
                time.sleep(random.uniform(0, min(0.1, 0.005 * attempt)))  # back off from the other writers
            current, version = self.get(path, model)
            new = change(current)
            if new is None:
                return current
            try:
                # after a lost connection the write may have landed: then the retry meets BadVersion, and the
                # next round re-reads and finds nothing left to change
                self.zk.retry(self.zk.set, path, encode(new), version=version)
                return new
            except BadVersionError:
                continue
        raise Conflict(f"{path}: too many concurrent updates")

    def children(self, path: str) -> list[str]:
        try:
            return sorted(self.zk.retry(self.zk.get_children, path))
        except NoNodeError:
            return []

    def lock(self, name: str, identifier: str = "", timeout: float | None = 30):
        """A held kazoo Lock on /pvc/locks/<name>, as a context manager."""

        @contextlib.contextmanager
        def held() -> Iterator[None]:
            lock = self.zk.Lock(layout.lock(name), identifier)
            try:
                acquired = lock.acquire(timeout=timeout)
            except LockTimeout:
                acquired = False
            if not acquired:
                raise Conflict(f"lock '{name}' is held by {', '.join(lock.contenders()) or 'another client'}")
            try:
                yield
            finally:
                with contextlib.suppress(Exception):
                    lock.release()

        return held()

    # -- schema --------------------------------------------------------------------------------------------
    def ensure_base(self) -> None:
        for path in layout.BASE_PATHS:
            self.zk.ensure_path(path)

    def schema_version(self) -> int | None:
        try:
            data, _ = self.zk.get(layout.SCHEMA)
        except NoNodeError:
            return None
        return int(json.loads(data)["version"])

    def set_schema_version(self, version: int) -> None:
        data = json.dumps({"version": version}).encode()
        try:
            self.zk.set(layout.SCHEMA, data)
        except NoNodeError:
            self.zk.create(layout.SCHEMA, data, makepath=True)

    # -- cluster -------------------------------------------------------------------------------------------
    def maintenance(self) -> bool:
        record = self.get_or_none(layout.MAINTENANCE, Maintenance)
        return bool(record and record.enabled)

    def set_maintenance(self, enabled: bool) -> None:
        self.put(layout.MAINTENANCE, Maintenance(enabled=enabled))

    def primary(self) -> str | None:
        record = self.get_or_none(layout.PRIMARY, Primary)
        return record.node if record else None

    def primary_request(self) -> str | None:
        record = self.get_or_none(layout.PRIMARY_REQUEST, Primary)
        return record.node if record else None

    def request_primary(self, node: str) -> None:
        self.put(layout.PRIMARY_REQUEST, Primary(node=node))

    def clear_primary_request(self) -> None:
        with contextlib.suppress(NoNodeError):
            self.zk.delete(layout.PRIMARY_REQUEST)

    # -- nodes ---------------------------------------------------------------------------------------------
    def node_names(self) -> list[str]:
        return self.children(layout.NODES)

    def node(self, name: str) -> NodeRecord:
        return self.get(layout.node(name), NodeRecord)[0]

    def nodes(self) -> list[NodeRecord]:
        return [n for n in (self.get_or_none(layout.node(name), NodeRecord) for name in self.node_names()) if n]

    def update_node(self, name: str, change: Callable[[NodeRecord], NodeRecord | None]) -> NodeRecord:
        def stamped(record: NodeRecord) -> NodeRecord | None:
            new = change(record)
            return None if new is None else new.model_copy(update={"updated": now()})

        return self.update(layout.node(name), NodeRecord, stamped)

    def keepalive(self, name: str) -> tuple[Keepalive, int] | None:
        """The node's last keepalive and when ZooKeeper stored it (ms, ZooKeeper's clock)."""
        try:
            data, stat = self.zk.get(layout.node_keepalive(name))
        except NoNodeError:
            return None
        return decode(Keepalive, data), stat.mtime

    def write_keepalive(self, name: str, keepalive: Keepalive) -> int:
        """Store a keepalive; returns its ZooKeeper mtime (ms), the clock every node's liveness is measured on."""
        path = layout.node_keepalive(name)
        try:
            stat = self.zk.set(path, encode(keepalive))
        except NoNodeError:
            self.zk.create(path, encode(keepalive), makepath=True)
            stat = self.zk.exists(path)
        return stat.mtime

    # -- VMs -----------------------------------------------------------------------------------------------
    def vm_uuids(self) -> list[str]:
        return self.children(layout.VMS)

    def vm(self, uuid: str) -> VmSpec:
        return self.get(layout.vm(uuid), VmSpec)[0]

    def vms(self) -> list[VmSpec]:
        return [v for v in (self.get_or_none(layout.vm(u), VmSpec) for u in self.vm_uuids()) if v]

    def find_vm(self, name_or_uuid: str) -> VmSpec:
        """A VM by UUID or by name."""
        spec = self.get_or_none(layout.vm(name_or_uuid), VmSpec) if "/" not in name_or_uuid else None
        if spec is not None:
            return spec
        for spec in self.vms():
            if spec.name == name_or_uuid:
                return spec
        raise NotFound(name_or_uuid)

    def define_vm(self, spec: VmSpec) -> None:
        """Create a VM's znodes in one transaction. Raises Conflict if the UUID or name is taken."""
        if any(v.name == spec.name for v in self.vms()):
            raise Conflict(f"a VM named '{spec.name}' already exists")
        tx = self.zk.transaction()
        tx.create(layout.vm(spec.uuid), encode(spec))
        tx.create(layout.vm_status(spec.uuid), encode(VmStatus(state="stopped", node=None)))
        tx.create(layout.vm_console(spec.uuid), encode(LogRing()))
        results = tx.commit()
        if any(isinstance(r, Exception) for r in results):
            if isinstance(results[0], NodeExistsError):
                raise Conflict(f"a VM with UUID {spec.uuid} already exists")
            raise next(r for r in results if isinstance(r, Exception))

    def remove_vm(self, uuid: str) -> None:
        tx = self.zk.transaction()
        for child in self.children(layout.vm(uuid)):
            tx.delete(f"{layout.vm(uuid)}/{child}")
        tx.delete(layout.vm(uuid))
        results = tx.commit()
        if any(isinstance(r, NoNodeError) for r in results):
            raise NotFound(uuid)

    def update_vm(self, uuid: str, change: Callable[[VmSpec], VmSpec | None]) -> VmSpec:
        def stamped(spec: VmSpec) -> VmSpec | None:
            new = change(spec)
            return None if new is None else new.model_copy(update={"updated": now()})

        try:
            return self.update(layout.vm(uuid), VmSpec, stamped)
        except NotFound:
            raise NotFound(uuid) from None

    def vm_status(self, uuid: str) -> VmStatus:
        return self.get_or_none(layout.vm_status(uuid), VmStatus) or VmStatus()

    def set_vm_status(self, uuid: str, status: VmStatus) -> None:
        if self.zk.exists(layout.vm(uuid)):
            self.put(layout.vm_status(uuid), status)

    def console(self, uuid: str) -> list[str]:
        record = self.get_or_none(layout.vm_console(uuid), LogRing)
        return record.lines if record else []

    def append_console(self, uuid: str, lines: list[str]) -> None:
        if not lines or not self.zk.exists(layout.vm(uuid)):
            return

        def add(ring: LogRing) -> LogRing:
            return LogRing(lines=bounded([*ring.lines, *lines]))

        try:
            self.update(layout.vm_console(uuid), LogRing, add)
        except NotFound:
            self.put(layout.vm_console(uuid), LogRing(lines=bounded(lines)))

    # -- faults --------------------------------------------------------------------------------------------
    def raise_fault(self, fault_id: str, kind: str, message: str, node: str | None = None) -> Fault:
        path = layout.fault(fault_id)
        try:
            return self.update(
                path, Fault, lambda f: f.model_copy(update={"message": message, "last": now(), "count": f.count + 1})
            )
        except NotFound:
            fault = Fault(id=fault_id, kind=kind, message=message, node=node)
            try:
                self.zk.create(path, encode(fault), makepath=True)
            except NodeExistsError:
                return self.raise_fault(fault_id, kind, message, node)
            return fault

    def faults(self) -> list[Fault]:
        return [f for f in (self.get_or_none(layout.fault(i), Fault) for i in self.children(layout.FAULTS)) if f]

    def clear_fault(self, fault_id: str) -> None:
        with contextlib.suppress(NoNodeError):
            self.zk.delete(layout.fault(fault_id))

    # -- tasks ---------------------------------------------------------------------------------------------
    def create_task(self, kind: str, target: str, total: int = 0, message: str = "") -> Task:
        task = Task(id=secrets.token_hex(8), kind=kind, target=target, total=total, message=message)
        self.zk.create(layout.task(task.id), encode(task), makepath=True)
        return task

    def task(self, task_id: str) -> Task:
        return self.get(layout.task(task_id), Task)[0]

    def tasks(self) -> list[Task]:
        return [t for t in (self.get_or_none(layout.task(i), Task) for i in self.children(layout.TASKS)) if t]

    def update_task(self, task_id: str, **fields: object) -> Task:
        return self.update(layout.task(task_id), Task, lambda t: t.model_copy(update={**fields, "updated": now()}))

    # -- storage: the primary's measurement of Ceph, and OSD requests for the nodes ------------------------------
    def storage_status(self) -> StorageStatus | None:
        return self.get_or_none(layout.STORAGE_STATUS, StorageStatus)

    def set_storage_status(self, status: StorageStatus) -> None:
        self.put(layout.STORAGE_STATUS, status)

    def osd_requests(self) -> list[OsdRequest]:
        """Every OSD request, oldest first."""
        found = (self.get_or_none(layout.osd_request(i), OsdRequest) for i in self.children(layout.OSD_REQUESTS))
        return sorted((r for r in found if r is not None), key=lambda r: r.created)

    def put_osd_request(self, request: OsdRequest) -> None:
        self.put(layout.osd_request(request.id), request)

    # -- formation -----------------------------------------------------------------------------------------
    def formation(self, node_name: str) -> FormationProgress | None:
        return self.get_or_none(layout.formation(node_name), FormationProgress)

    def set_formation(self, progress: FormationProgress) -> None:
        self.put(layout.formation(progress.node), progress)


def bounded(lines: list[str], max_lines: int = LOG_LINES, max_bytes: int = LOG_BYTES) -> list[str]:
    """The last lines of `lines` that fit both limits."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines[-max_lines:]):
        size += len(line.encode()) + 1
        if size > max_bytes:
            break
        kept.append(line)
    return kept[::-1]
