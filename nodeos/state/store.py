"""Typed accessors for the cluster state in ZooKeeper.

`ClusterState` wraps one kazoo client and is the only code that reads or writes PVC's znodes. Reads return
(record, znode version) where a caller may want to write back conditionally; `update()` is the compare-and-set loop
every read-modify-write uses; writes that touch several znodes go through one ZooKeeper transaction.

Every call goes through `zk.retry` (an operation cut off by a lost connection is repeated once the client
reconnects, for up to RETRY_SECONDS), except the few whose comment says why a late write would be wrong.
"""

from __future__ import annotations

import contextlib
import json
import random
import secrets
import time
import uuid as uuidlib
from collections.abc import Callable, Collection, Iterator
from typing import Literal, TypeVar

from kazoo.client import KazooClient, TransactionRequest
from kazoo.exceptions import (
    BadVersionError,
    KazooException,
    LockTimeout,
    NodeExistsError,
    NoNodeError,
    RolledBackError,
    RuntimeInconsistency,
)
from kazoo.recipe.election import Election
from kazoo.security import make_digest_acl
from pydantic import BaseModel

from pvc.config.schema import ClusterFile
from pvc.config.secrets import ZK_USER, zookeeper_password
from pvc.nodeos.state import layout
from pvc.nodeos.state.models import (
    ApiKeyRecord,
    DataDisk,
    Fault,
    FormationProgress,
    Keepalive,
    Lease,
    LogRing,
    Maintenance,
    NetworkRecord,
    NodeRecord,
    OsdRequest,
    Primary,
    StorageStatus,
    Task,
    VmMac,
    VmName,
    VmSeed,
    VmSpec,
    VmStatus,
    now,
)

M = TypeVar("M", bound=BaseModel)
TaskEnd = Literal["succeeded", "failed"]

LOG_LINES = 1000  # lines kept in a LogRing (console logs, node logs)
CONSOLE_BYTES = 32 * 1024  # and at most this many bytes of them: a VM's serial console
NODE_LOG_BYTES = 64 * 1024  # a node daemon's log
RETRY_SECONDS = 15.0  # how long a read or write waits for a lost ZooKeeper connection to come back


class NotFound(Exception):
    """No such record in the cluster state (a VM, node, task, ...): the API answers 404. A Ceph object that does
    not exist is storage's Missing; a machine cluster.toml does not list is boot's NotInConfig."""


class Conflict(Exception):
    """A concurrent writer won a compare-and-set too many times, or an object already exists."""


class MacTaken(Conflict):
    """A NIC's MAC address is held by another VM (the MAC index): `mac` says which."""

    def __init__(self, mac: str, holder: str | None) -> None:
        super().__init__(f"MAC address {mac} is already used by " + (f"VM {holder}" if holder else "another VM"))
        self.mac = mac
        self.holder = holder


def encode(record: BaseModel) -> bytes:
    return record.model_dump_json().encode()


def decode(model: type[M], data: bytes) -> M:
    # Python mode, not model_validate_json: records embed cluster.toml's strict models (a network's DHCP range,
    # reservations, ACL rules), whose address types parse text in Python mode only.
    return model.model_validate(json.loads(data or b"{}"))


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


def cluster_client(
    cfg: ClusterFile,
    join_key: str | None = None,
    *,
    password: str | None = None,
    hosts: str | None = None,
    timeout: float | None = None,
) -> KazooClient:
    """The (not yet started) client of a PVC process: the cluster's ZooKeeper, every coordinator unless `hosts`
    says otherwise, with the credentials derived from the join key (or the derived `password` itself, for the API,
    which does not hold the join key). The session lasts zookeeper.session_timeout_ms unless `timeout` (seconds)
    says otherwise."""
    if password is None:
        if join_key is None:
            raise ValueError("cluster_client needs the join key or the ZooKeeper password")
        password = zookeeper_password(join_key)
    return make_client(
        hosts or cfg.zookeeper_hosts(),
        user=ZK_USER,
        password=password,
        timeout=cfg.zookeeper.session_timeout_ms / 1000 if timeout is None else timeout,
    )


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

    def lock(
        self, name: str, identifier: str = "", timeout: float | None = 30
    ) -> contextlib.AbstractContextManager[None]:
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

    # -- watches and recipes (callbacks run on kazoo's event thread; see kazoo's ChildrenWatch and DataWatch) ----
    def watch_vm_list(self, on_change: Callable[[list[str]], bool | None]) -> None:
        """Call `on_change(uuids)` now and whenever a VM is defined or removed; it returns False to stop."""
        self.zk.ChildrenWatch(layout.VMS, on_change)

    def watch_vm(self, uuid: str, on_change: Callable[..., bool | None]) -> None:
        """Call `on_change(data, stat, event)` now and whenever the VM's spec changes; it returns False to stop."""
        self.zk.DataWatch(layout.vm(uuid), on_change)

    def watch_node(self, name: str, on_change: Callable[..., bool | None]) -> None:
        """Call `on_change(data, stat)` now and whenever the node's record changes; it returns False to stop."""
        self.zk.DataWatch(layout.node(name), on_change)

    def election(self, identifier: str) -> Election:
        """The coordinators' election (kazoo's recipe): `run(fn)` calls `fn` while this client leads."""
        return self.zk.Election(layout.ELECTION, identifier)

    # -- schema --------------------------------------------------------------------------------------------
    def ensure_base(self) -> None:
        for path in layout.BASE_PATHS:
            self.zk.retry(self.zk.ensure_path, path)

    def schema_version(self) -> int | None:
        try:
            data, _ = self.zk.retry(self.zk.get, layout.SCHEMA)
        except NoNodeError:
            return None
        return int(json.loads(data)["version"])

    def set_schema_version(self, version: int) -> None:
        data = json.dumps({"version": version}).encode()
        try:
            self.zk.retry(self.zk.set, layout.SCHEMA, data)
        except NoNodeError:
            with contextlib.suppress(NodeExistsError):  # a retried create that had landed
                self.zk.retry(self.zk.create, layout.SCHEMA, data, makepath=True)

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
            self.zk.retry(self.zk.delete, layout.PRIMARY_REQUEST)

    def stamp_primary(self, node: str) -> int:
        """Rewrite the primary's znode (this session's, just claimed) and return its mtime: when this primary's term
        began, on ZooKeeper's clock. Not retried, like claim_primary; Conflict if the znode is not this session's."""
        stat = self.zk.exists(layout.PRIMARY)
        if stat is None or self.zk.client_id is None or stat.ephemeralOwner != self.zk.client_id[0]:
            raise Conflict("the primary's znode is not this session's")
        return self.zk.set(layout.PRIMARY, encode(Primary(node=node)), version=stat.version).mtime

    def is_primary_session(self) -> bool:
        """Whether the primary's znode belongs to this client's current session: false once the session that
        claimed it expired, even before this client has heard so."""
        try:
            stat = self.zk.retry(self.zk.exists, layout.PRIMARY)
        except KazooException:
            return False
        return stat is not None and self.zk.client_id is not None and stat.ephemeralOwner == self.zk.client_id[0]

    def resign_primary(self, election: Election) -> None:
        """Leave the election: delete this contender's lock znode and, if it is ours, the primary's znode, so that
        the next coordinator takes over now (not when this session ends). Safe from any thread, and when the lock
        was never won; a lost connection raises (the caller tries again)."""
        lock = election.lock
        for child in self.zk.retry(self.zk.get_children, layout.ELECTION):
            if child.startswith(lock.prefix):
                with contextlib.suppress(NoNodeError):
                    self.zk.retry(self.zk.delete, f"{layout.ELECTION}/{child}")
        stat = self.zk.retry(self.zk.exists, layout.PRIMARY)
        if stat is not None and self.zk.client_id is not None and stat.ephemeralOwner == self.zk.client_id[0]:
            with contextlib.suppress(NoNodeError, BadVersionError):
                self.zk.retry(self.zk.delete, layout.PRIMARY, version=stat.version)

    def claim_primary(self, node: str, take_over: bool = True) -> bool:
        """Publish `node` as the primary (an ephemeral znode of this session); returns whether the znode is this
        session's now. With `take_over`, a previous primary's znode whose session has not expired yet is replaced
        (the election's winner does that once, when its term begins); without, another session's znode means that
        another coordinator is primary.

        Not retried: only the election's winner may claim, and a claim repeated after a lost connection could land
        after this session lost the election (the caller's election loop claims again while it still leads)."""
        data = encode(Primary(node=node))
        try:
            self.zk.create(layout.PRIMARY, data, ephemeral=True)
            return True
        except NodeExistsError:
            _current, stat = self.zk.get(layout.PRIMARY)
            if stat.ephemeralOwner == self.zk.client_id[0]:
                return True
            if not take_over:
                return False
            with contextlib.suppress(KazooException):
                self.zk.delete(layout.PRIMARY, version=stat.version)
                self.zk.create(layout.PRIMARY, data, ephemeral=True)
                return True
            return False

    # -- nodes ---------------------------------------------------------------------------------------------
    def node_names(self) -> list[str]:
        return self.children(layout.NODES)

    def node(self, name: str) -> NodeRecord:
        return self.get(layout.node(name), NodeRecord)[0]

    def nodes(self) -> list[NodeRecord]:
        return [n for n in (self.get_or_none(layout.node(name), NodeRecord) for name in self.node_names()) if n]

    def put_node(self, record: NodeRecord) -> None:
        """Write a node's record whole (tests)."""
        self.put(layout.node(record.name), record)

    def create_node(self, record: NodeRecord) -> bool:
        """Create a node's record unless it exists (pvcd's first start on a node). Returns whether it created it: a
        record written meanwhile (its fence, its `flushed`) is never overwritten."""
        try:
            self.zk.retry(self.zk.create, layout.node(record.name), encode(record), makepath=True)
            return True
        except NodeExistsError:
            return False

    def node_alive(self, name: str) -> bool:
        """Whether the node's pvcd holds a ZooKeeper session (its ephemeral alive znode exists)."""
        return self.zk.retry(self.zk.exists, layout.node_alive(name)) is not None

    def update_node(self, name: str, change: Callable[[NodeRecord], NodeRecord | None]) -> NodeRecord:
        def stamped(record: NodeRecord) -> NodeRecord | None:
            new = change(record)
            return None if new is None else new.model_copy(update={"updated": now()})

        return self.update(layout.node(name), NodeRecord, stamped)

    def keepalive(self, name: str) -> tuple[Keepalive, int] | None:
        """The node's last keepalive and when ZooKeeper stored it (ms, ZooKeeper's clock)."""
        try:
            data, stat = self.zk.retry(self.zk.get, layout.node_keepalive(name))
        except NoNodeError:
            return None
        return decode(Keepalive, data), stat.mtime

    # The keepalive's two writes are not retried: their time is their meaning. A keepalive held back until a lost
    # connection returns would stamp an old sample with a fresh mtime (and hold the keepalive loop, which writes a
    # new one every interval anyway), and the alive znode belongs to the session that exists now.
    def write_keepalive(self, name: str, keepalive: Keepalive) -> int:
        """Store a keepalive; returns its ZooKeeper mtime (ms), the clock every node's liveness is measured on."""
        path = layout.node_keepalive(name)
        try:
            stat = self.zk.set(path, encode(keepalive))
        except NoNodeError:
            self.zk.create(path, encode(keepalive), makepath=True)
            stat = self.zk.exists(path)
        return stat.mtime

    def mark_alive(self, name: str) -> None:
        """Make sure the node's ephemeral alive znode exists: it vanishes with this session."""
        if not self.zk.exists(layout.node_alive(name)):
            with contextlib.suppress(NodeExistsError):
                self.zk.create(layout.node_alive(name), b"", ephemeral=True, makepath=True)

    def node_log(self, name: str) -> list[str]:
        """The node daemon's recent log lines (`pvc node log`)."""
        record = self.get_or_none(layout.node_log(name), LogRing)
        return record.lines if record else []

    def append_node_log(self, name: str, lines: list[str]) -> None:
        self._append_ring(layout.node_log(name), lines, NODE_LOG_BYTES)

    # -- VMs -----------------------------------------------------------------------------------------------
    def vm_uuids(self) -> list[str]:
        return self.children(layout.VMS)

    def vm(self, uuid: str) -> VmSpec:
        return self.get(layout.vm(uuid), VmSpec)[0]

    def vm_record(self, uuid: str) -> tuple[dict, int] | None:
        """A VM's record as stored (JSON, whatever its shape) and its znode version: for schema migrations."""
        try:
            data, stat = self.zk.retry(self.zk.get, layout.vm(uuid))
        except NoNodeError:
            return None
        return json.loads(data or b"{}"), stat.version

    def vms(self) -> list[VmSpec]:
        return [v for v in (self.get_or_none(layout.vm(u), VmSpec) for u in self.vm_uuids()) if v]

    def find_vm(self, name_or_uuid: str) -> VmSpec:
        """A VM by UUID or by name: one read of the VM, after one read of the name index for a name."""
        if _is_uuid(name_or_uuid) and (spec := self.get_or_none(layout.vm(name_or_uuid), VmSpec)) is not None:
            return spec
        entry = self._name_entry(name_or_uuid)
        if entry is not None and (spec := self.get_or_none(layout.vm(entry[0]), VmSpec)) is not None:
            return spec
        raise NotFound(name_or_uuid)

    def define_vm(self, spec: VmSpec) -> None:
        """Create a VM's znodes and its index entries (name, MACs) in one transaction: of two defines of one name,
        UUID or MAC, exactly one succeeds and the other raises Conflict (MacTaken for a MAC)."""
        macs = sorted(spec.macs)

        def build(tx: TransactionRequest) -> None:
            tx.create(layout.vm_name(spec.name), encode(VmName(uuid=spec.uuid)))
            for mac in macs:
                tx.create(layout.vm_mac(mac), encode(VmMac(uuid=spec.uuid)))
            tx.create(layout.vm(spec.uuid), encode(spec))
            tx.create(layout.vm_status(spec.uuid), encode(VmStatus(state="stopped", node=None)))
            tx.create(layout.vm_console(spec.uuid), encode(LogRing()))

        failed, resent = self._commit(build)
        if failed is None or (resent and self._holder(spec.name) == spec.uuid):  # done (maybe by the first send)
            return
        if failed == 0:
            raise Conflict(f"a VM named '{spec.name}' already exists")
        if failed <= len(macs):
            raise MacTaken(macs[failed - 1], self.mac_holder(macs[failed - 1]))
        if failed == len(macs) + 1:
            raise Conflict(f"a VM with UUID {spec.uuid} already exists")
        raise Conflict(f"VM {spec.uuid} changed while it was being defined")

    def remove_vm(self, uuid: str) -> None:
        """Delete a VM's znodes and its index entries in one transaction."""
        spec = self.get_or_none(layout.vm(uuid), VmSpec)
        if spec is None:
            raise NotFound(uuid)
        children = self.children(layout.vm(uuid))
        entry = self._name_entry(spec.name)
        macs = self._mac_entries(uuid, spec.macs)

        def build(tx: TransactionRequest) -> None:
            for child in children:
                tx.delete(f"{layout.vm(uuid)}/{child}")
            tx.delete(layout.vm(uuid))
            if entry is not None and entry[0] == uuid:
                tx.delete(layout.vm_name(spec.name), version=entry[1])
            for mac, version in macs.items():
                tx.delete(layout.vm_mac(mac), version=version)

        failed, resent = self._commit(build)
        if failed is None:
            return
        if not self.zk.retry(self.zk.exists, layout.vm(uuid)):  # gone: by our first send, or by someone else
            if resent:
                return
            raise NotFound(uuid)
        raise Conflict(f"VM '{spec.name}' changed while it was being removed; try again")

    def rename_vm(self, uuid: str, new_name: str, states: Collection[str] | None = None) -> VmSpec:
        """Give a VM a new name (in its record and its definition) and move its index entry, in one transaction; with
        `states`, only while the VM's desired state is one of them (checked on the version the rename replaces)."""
        try:
            spec, version = self.get(layout.vm(uuid), VmSpec)
        except NotFound:
            raise NotFound(uuid) from None
        if states is not None and spec.state not in states:
            raise Conflict(f"VM '{spec.name}' is now to {spec.state}: stop it before renaming it")
        if spec.name == new_name:
            return spec
        definition = spec.definition.changed(name=new_name) if spec.definition else None
        new = spec.model_copy(update={"name": new_name, "definition": definition, "updated": now()})
        entry = self._name_entry(spec.name)

        def build(tx: TransactionRequest) -> None:
            tx.create(layout.vm_name(new_name), encode(VmName(uuid=uuid)))
            tx.set_data(layout.vm(uuid), encode(new), version=version)
            if entry is not None and entry[0] == uuid:
                tx.delete(layout.vm_name(spec.name), version=entry[1])

        failed, resent = self._commit(build)
        if failed is None or (resent and self._holder(new_name) == uuid):
            return new
        if failed == 0:
            raise Conflict(f"a VM named '{new_name}' already exists")
        raise Conflict(f"VM '{spec.name}' changed while it was being renamed; try again")

    def mac_holder(self, mac: str) -> str | None:
        """The UUID of the VM one of whose NICs holds `mac`, if any."""
        try:
            data, _ = self.zk.retry(self.zk.get, layout.vm_mac(mac))
        except NoNodeError:
            return None
        return decode(VmMac, data).uuid

    def _mac_entries(self, uuid: str, macs: set[str]) -> dict[str, int]:
        """{mac: znode version} of the MAC index entries among `macs` that `uuid` holds."""
        held = {}
        for mac in macs:
            with contextlib.suppress(NoNodeError):
                data, stat = self.zk.retry(self.zk.get, layout.vm_mac(mac))
                if decode(VmMac, data).uuid == uuid:
                    held[mac] = stat.version
        return held

    def _name_entry(self, name: str) -> tuple[str, int] | None:
        """(uuid, znode version) of the VM holding `name` in the index."""
        try:
            data, stat = self.zk.retry(self.zk.get, layout.vm_name(name))
        except NoNodeError:
            return None
        return decode(VmName, data).uuid, stat.version

    def _holder(self, name: str) -> str | None:
        entry = self._name_entry(name)
        return entry[0] if entry else None

    def _commit(self, build: Callable[[TransactionRequest], None]) -> tuple[int | None, bool]:
        """Commit the transaction `build` fills, retried like every call. Returns the index of the operation that
        failed (None: all done) and whether it was sent more than once: then a failure may mean that the first
        send had landed, which the caller checks."""
        sends = 0

        def commit() -> list:
            nonlocal sends
            sends += 1
            tx = self.zk.transaction()
            build(tx)
            return tx.commit()

        results = self.zk.retry(commit)
        failed = next(
            (i for i, r in enumerate(results) if isinstance(r, Exception) and not isinstance(r, _NOT_THE_CAUSE)),
            None,
        )
        return failed, sends > 1

    def update_vm(self, uuid: str, change: Callable[[VmSpec], VmSpec | None], retries: int = 50) -> VmSpec:
        """Read-modify-write of a VM's record with compare-and-set (`change` returns the new record, None: no
        write). When its NICs' MACs change, the MAC index changes in the same transaction (MacTaken if another VM
        holds a new one)."""
        for attempt in range(retries):
            if attempt:
                time.sleep(random.uniform(0, min(0.1, 0.005 * attempt)))
            try:
                spec, version = self.get(layout.vm(uuid), VmSpec)
            except NotFound:
                raise NotFound(uuid) from None
            new = change(spec)
            if new is None:
                return spec
            if new.name != spec.name:
                raise ValueError("a VM's name changes only through rename_vm (it is indexed)")
            new = new.model_copy(update={"updated": now()})
            added = sorted(m for m in new.macs - spec.macs if self.mac_holder(m) != uuid)  # ours already: a leftover
            removed = spec.macs - new.macs
            if not added and not removed:
                try:
                    self.zk.retry(self.zk.set, layout.vm(uuid), encode(new), version=version)
                    return new
                except BadVersionError:
                    continue
            if self.replace_vm_record(new, version, added, self._mac_entries(uuid, removed)):
                return new
        raise Conflict(f"{layout.vm(uuid)}: too many concurrent updates")

    def replace_vm_record(self, new: VmSpec, version: int, added: list[str], stale: dict[str, int]) -> bool:
        """Write a VM's record over `version`, creating the MAC index entries `added` and deleting `stale` ones, in
        one transaction. False when the record changed meanwhile; MacTaken when another VM holds an added MAC.
        (update_vm's write, and the schema migration's, which reads records in their old shape.)"""
        uuid = new.uuid

        def build(tx: TransactionRequest) -> None:
            for mac in added:
                tx.create(layout.vm_mac(mac), encode(VmMac(uuid=uuid)))
            tx.set_data(layout.vm(uuid), encode(new), version=version)
            for mac, mac_version in stale.items():
                tx.delete(layout.vm_mac(mac), version=mac_version)

        failed, resent = self._commit(build)
        if failed is None or (resent and self.get_or_none(layout.vm(uuid), VmSpec) == new):
            return True
        if failed < len(added) and (holder := self.mac_holder(added[failed])) != uuid:
            raise MacTaken(added[failed], holder)
        return False

    def vm_status(self, uuid: str) -> VmStatus:
        return self.get_or_none(layout.vm_status(uuid), VmStatus) or VmStatus()

    def set_vm_status(self, uuid: str, status: VmStatus) -> None:
        if self.zk.retry(self.zk.exists, layout.vm(uuid)):
            self.put(layout.vm_status(uuid), status)

    def vm_seed(self, uuid: str) -> VmSeed | None:
        return self.get_or_none(layout.vm_seed(uuid), VmSeed)

    def put_vm_seed(self, uuid: str, seed: VmSeed) -> None:
        """Write a VM's seed documents beside it; NotFound when the VM is gone (never a VM znode without a VM)."""
        try:
            self.zk.retry(self.zk.create, layout.vm_seed(uuid), encode(seed))
        except NodeExistsError:
            self.zk.retry(self.zk.set, layout.vm_seed(uuid), encode(seed))
        except NoNodeError:
            raise NotFound(layout.vm(uuid)) from None

    def console(self, uuid: str) -> list[str]:
        record = self.get_or_none(layout.vm_console(uuid), LogRing)
        return record.lines if record else []

    def append_console(self, uuid: str, lines: list[str]) -> None:
        if lines and self.zk.retry(self.zk.exists, layout.vm(uuid)):
            self._append_ring(layout.vm_console(uuid), lines, CONSOLE_BYTES)

    def _append_ring(self, path: str, lines: list[str], max_bytes: int) -> None:
        """Add lines to a LogRing, keeping it within its bounds."""
        if not lines:
            return
        try:
            self.update(path, LogRing, lambda ring: LogRing(lines=bounded([*ring.lines, *lines], max_bytes=max_bytes)))
        except NotFound:
            self.put(path, LogRing(lines=bounded(lines, max_bytes=max_bytes)))

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
                self.zk.retry(self.zk.create, path, encode(fault), makepath=True)
            except NodeExistsError:  # raised meanwhile (or by a retried create of ours): count it there
                return self.raise_fault(fault_id, kind, message, node)
            return fault

    def faults(self) -> list[Fault]:
        return [f for f in (self.get_or_none(layout.fault(i), Fault) for i in self.children(layout.FAULTS)) if f]

    def acknowledge_fault(self, fault_id: str) -> Fault:
        """Mark a fault as seen: it stays listed but no longer makes the cluster degraded (NotFound if absent)."""
        return self.update(layout.fault(fault_id), Fault, lambda f: f.model_copy(update={"acknowledged": True}))

    def clear_fault(self, fault_id: str) -> None:
        with contextlib.suppress(NoNodeError):
            self.zk.retry(self.zk.delete, layout.fault(fault_id))

    # -- tasks ---------------------------------------------------------------------------------------------
    def create_task(self, kind: str, target: str, total: int = 0, message: str = "") -> Task:
        task = Task(id=secrets.token_hex(8), kind=kind, target=target, total=total, message=message)
        with contextlib.suppress(NodeExistsError):  # a retried create that had landed: the id is random and ours
            self.zk.retry(self.zk.create, layout.task(task.id), encode(task), makepath=True)
        return task

    def task(self, task_id: str) -> Task:
        return self.get(layout.task(task_id), Task)[0]

    def tasks(self) -> list[Task]:
        return [t for t in (self.get_or_none(layout.task(i), Task) for i in self.children(layout.TASKS)) if t]

    def update_task(self, task_id: str, **fields: object) -> Task:
        return self.update(layout.task(task_id), Task, lambda t: t.model_copy(update={**fields, "updated": now()}))

    def prune_tasks(self, keep_per_kind: int) -> int:
        """Delete finished tasks beyond the newest `keep_per_kind` of each kind; returns how many went."""
        finished: dict[str, list[Task]] = {}
        for task in self.tasks():
            if task.state in ("succeeded", "failed"):
                finished.setdefault(task.kind, []).append(task)
        gone = 0
        for tasks in finished.values():
            for task in sorted(tasks, key=lambda t: t.updated, reverse=True)[keep_per_kind:]:
                with contextlib.suppress(NoNodeError):
                    self.zk.retry(self.zk.delete, layout.task(task.id))
                    gone += 1
        return gone

    def finish_task(self, task_id: str, state: TaskEnd, message: str) -> Task:
        """End a task with `state` unless it has ended already (whoever ended it first said what happened)."""

        def end(t: Task) -> Task | None:
            if t.state in ("succeeded", "failed"):
                return None
            progress = t.total if state == "succeeded" else t.progress
            return t.model_copy(update={"state": state, "progress": progress, "message": message, "updated": now()})

        return self.update(layout.task(task_id), Task, end)

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

    # -- client networks -----------------------------------------------------------------------------------
    def network_vnis(self) -> list[int]:
        return sorted(int(c) for c in self.children(layout.NETWORKS) if c.isdigit())

    def network(self, vni: int) -> NetworkRecord:
        try:
            return self.get(layout.network(vni), NetworkRecord)[0]
        except NotFound:
            raise NotFound(f"no network with VNI {vni}") from None

    def networks(self) -> list[NetworkRecord]:
        found = (self.get_or_none(layout.network(vni), NetworkRecord) for vni in self.network_vnis())
        return [n for n in found if n is not None]

    def create_network(self, record: NetworkRecord) -> None:
        """Create a network; Conflict if its VNI or its name is taken."""
        for other in self.networks():
            if other.name == record.name and other.vni != record.vni:
                raise Conflict(f"a network named '{record.name}' already exists (VNI {other.vni})")
        try:
            self.zk.retry(self.zk.create, layout.network(record.vni), encode(record), makepath=True)
        except NodeExistsError:
            existing = self.get_or_none(layout.network(record.vni), NetworkRecord)
            if existing is not None and existing.created == record.created:  # a retried create that had landed
                return
            raise Conflict(f"a network with VNI {record.vni} already exists") from None

    def update_network(self, vni: int, change: Callable[[NetworkRecord], NetworkRecord | None]) -> NetworkRecord:
        def stamped(record: NetworkRecord) -> NetworkRecord | None:
            new = change(record)
            return None if new is None else new.model_copy(update={"updated": now()})

        try:
            return self.update(layout.network(vni), NetworkRecord, stamped)
        except NotFound:
            raise NotFound(f"no network with VNI {vni}") from None

    def remove_network(self, vni: int) -> None:
        """Delete a network and its leases."""
        try:
            self.zk.retry(self.zk.delete, layout.network(vni), recursive=True)
        except NoNodeError:
            raise NotFound(f"no network with VNI {vni}") from None

    def watch_networks(self, on_change: Callable[[], None]) -> None:
        """Call `on_change()` now and whenever a network is created, changed or removed (not for leases)."""
        watched: set[int] = set()

        def one(vni: int) -> None:
            def changed(data: bytes | None, stat: object, event: object = None) -> bool | None:
                on_change()
                if data is None and stat is None:  # removed: stop watching it
                    watched.discard(vni)
                    return False
                return None

            self.zk.DataWatch(layout.network(vni), changed)

        def children(names: list[str]) -> None:
            for vni in (int(n) for n in names if n.isdigit()):
                if vni not in watched:
                    watched.add(vni)
                    one(vni)
            on_change()

        self.zk.ChildrenWatch(layout.NETWORKS, children)

    def leases(self, vni: int) -> list[Lease]:
        path = layout.network_leases(vni)
        found = (self.get_or_none(f"{path}/{mac}", Lease) for mac in self.children(path))
        return [lease for lease in found if lease is not None]

    def put_lease(self, vni: int, lease: Lease) -> None:
        """Store a lease of an existing network (a lease for a network removed meanwhile is dropped)."""
        if self.zk.retry(self.zk.exists, layout.network(vni)):
            self.put(layout.network_lease(vni, lease.mac), lease)

    def remove_lease(self, vni: int, mac: str) -> None:
        with contextlib.suppress(NoNodeError):
            self.zk.retry(self.zk.delete, layout.network_lease(vni, mac))

    # -- API keys (digests only: pvc.api.keys) ---------------------------------------------------------------
    def api_keys(self) -> list[ApiKeyRecord]:
        found = (self.get_or_none(layout.api_key(n), ApiKeyRecord) for n in self.children(layout.API_KEYS))
        return [k for k in found if k is not None]

    def api_key(self, name: str) -> tuple[ApiKeyRecord, int]:
        """The key's record and its znode version; NotFound naming the key."""
        try:
            return self.get(layout.api_key(name), ApiKeyRecord)
        except NotFound:
            raise NotFound(f"API key '{name}'") from None

    def create_api_key(self, record: ApiKeyRecord) -> None:
        """Store a new key; Conflict if the name is taken."""
        try:
            self.zk.retry(self.zk.create, layout.api_key(record.name), encode(record), makepath=True)
        except NodeExistsError:
            raise Conflict(f"an API key named '{record.name}' exists") from None

    def put_api_key(self, record: ApiKeyRecord, version: int = -1) -> None:
        """Write a key's record (over `version` only, when given: Conflict if it changed meanwhile)."""
        try:
            self.put(layout.api_key(record.name), record, version)
        except BadVersionError:
            raise Conflict(f"API key '{record.name}' changed meanwhile; try again") from None

    def remove_api_key(self, name: str, version: int = -1) -> None:
        try:
            self.zk.retry(self.zk.delete, layout.api_key(name), version=version)
        except NoNodeError:
            raise NotFound(f"API key '{name}'") from None
        except BadVersionError:
            raise Conflict(f"API key '{name}' changed meanwhile; try again") from None

    def prune_osd_requests(self, keep: int) -> int:
        """Delete finished OSD requests beyond the newest `keep`; returns how many went."""
        finished = [r for r in self.osd_requests() if r.state != "pending"]
        gone = 0
        for request in finished[: max(0, len(finished) - keep)]:  # oldest first
            with contextlib.suppress(NoNodeError):
                self.zk.retry(self.zk.delete, layout.osd_request(request.id))
                gone += 1
        return gone

    # -- formation -----------------------------------------------------------------------------------------
    def formation(self, node_name: str) -> FormationProgress | None:
        return self.get_or_none(layout.formation(node_name), FormationProgress)

    def set_formation(self, progress: FormationProgress) -> None:
        self.put(layout.formation(progress.node), progress)

    def data_disk(self, node_name: str) -> DataDisk | None:
        return self.get_or_none(layout.data_disk(node_name), DataDisk)

    def set_data_disk(self, record: DataDisk) -> None:
        self.put(layout.data_disk(record.node), record)


# What ZooKeeper reports for the operations of a failed transaction that did not fail themselves.
_NOT_THE_CAUSE = (RolledBackError, RuntimeInconsistency)


def _is_uuid(text: str) -> bool:
    try:
        return str(uuidlib.UUID(text)) == text
    except ValueError:
        return False


def bounded(lines: list[str], max_lines: int = LOG_LINES, max_bytes: int = NODE_LOG_BYTES) -> list[str]:
    """The last lines of `lines` that fit both limits."""
    kept: list[str] = []
    size = 0
    for line in reversed(lines[-max_lines:]):
        size += len(line.encode()) + 1
        if size > max_bytes:
            break
        kept.append(line)
    return kept[::-1]
