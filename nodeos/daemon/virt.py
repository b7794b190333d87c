"""A thin libvirt layer for pvcd: domains by UUID, every call with a deadline.

libvirtd can stop answering (stopped, or blocked on a QEMU or on storage) while its socket still accepts. Two
guards keep that from freezing pvcd's threads: libvirt's keepalive on each connection (an event loop thread runs
libvirt's default event implementation) closes a connection whose daemon stops answering pings, which ends the call
waiting on it; and each call runs in a helper thread that the caller waits for only until its deadline, for a
daemon that answers pings but not the call. A call past its deadline raises VirtTimeout and its helper is left to
finish on its own; while too many are left over, new calls fail at once.

Each call takes a connection of its own from a small pool (opening one if none is idle) and gives it back when it
returns: a connection never carries two calls at once. (libvirt 9 crashes when its keepalive closes a connection
that several threads are calling on; and a call left over past its deadline must not share its connection with the
next one.) So every operation looks its domain up by UUID within the same call.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import libvirt

log = logging.getLogger(__name__)
T = TypeVar("T")

# Keep libvirt's own error printing out of the daemon's log: errors reach us as exceptions.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)

CALL_TIMEOUT = 30.0  # seconds a libvirt call may take (a domain start or destroy included)
ABORT_GRACE = 15.0  # seconds an aborted migration has to end before pvcd stops waiting for it
MAX_LEFT_OVER = 8  # calls past their deadline still running, before new calls fail at once
MAX_IDLE = 8  # idle connections kept for the next calls


class VirtError(Exception):
    pass


class VirtTimeout(VirtError):
    """libvirt did not answer in time (or not at all): what the call did is unknown, so try again later."""


class MigrationTimeout(VirtError):
    """A live migration that did not converge in time and was aborted: the VM still runs on the source."""


# Paused domains that do not (yet) run on this node: an incoming migration, and one libvirt is still starting.
NOT_YET_HERE = (libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP)

_event_loop_lock = threading.Lock()
_event_loop: threading.Thread | None = None


def _ensure_event_loop() -> None:
    """libvirt's default event implementation, run by one thread: what keepalive pings need."""
    global _event_loop
    with _event_loop_lock:
        if _event_loop is not None:
            return
        libvirt.virEventRegisterDefaultImpl()

        def run() -> None:
            while True:
                try:
                    libvirt.virEventRunDefaultImpl()
                except Exception:  # keep the loop alive whatever one callback did
                    log.exception("libvirt event loop")
                    time.sleep(0.5)

        _event_loop = threading.Thread(target=run, name="libvirt-events", daemon=True)
        _event_loop.start()


class Deadlines:
    """Runs calls that may block for ever, each in a helper thread the caller waits for until a deadline."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self.left_over = 0  # calls past their deadline that have not returned yet

    def call(self, what: str, fn: Callable[[], T], timeout: float = CALL_TIMEOUT) -> T:
        """Run `fn` and return its result (or raise what it raised), or raise VirtTimeout after `timeout` s."""
        with self._lock:
            if self.left_over >= MAX_LEFT_OVER:
                raise VirtTimeout(f"{self.name} is not answering ({self.left_over} calls still waiting)")
        box: dict[str, object] = {}
        done = threading.Event()

        def run() -> None:
            try:
                box["result"] = fn()
            except BaseException as exc:  # handed to the caller
                box["error"] = exc
            finally:
                with self._lock:
                    done.set()
                    if box.get("late"):
                        self.left_over -= 1

        threading.Thread(target=run, name=f"libvirt-{what}"[:15], daemon=True).start()
        if not done.wait(timeout):
            with self._lock:
                if not done.is_set():
                    box["late"] = True
                    self.left_over += 1
                    raise VirtTimeout(f"{self.name} did not answer {what} within {timeout:.0f}s")
        if "error" in box:
            raise box["error"]  # type: ignore[misc]
        return box["result"]  # type: ignore[return-value]


@dataclass(frozen=True)
class Domains:
    """What runs on this node, as the keepalive reports it."""

    running: list[str]  # UUIDs: running, or paused by someone (not an incoming migration, not starting up)
    mem_allocated: int  # MiB
    vcpus_allocated: int


class Virt:
    def __init__(self, uri: str, keepalive_interval: int = 5, keepalive_count: int = 3) -> None:
        self.uri = uri
        self.keepalive = (keepalive_interval, keepalive_count)
        self._idle: list[libvirt.virConnect] = []
        self._lock = threading.Lock()
        self._local = Deadlines(f"libvirt at {uri}")
        self._remote = Deadlines("another node's libvirt")
        _ensure_event_loop()

    # -- calls with deadlines, one connection each ---------------------------------------------------------------
    def run(self, what: str, fn: Callable[[libvirt.virConnect], T], timeout: float = CALL_TIMEOUT) -> T:
        """`fn(connection)` with a deadline (VirtTimeout), libvirt's errors as VirtError."""

        def job() -> T:
            conn = self._checkout()
            try:
                return fn(conn)
            finally:
                self._checkin(conn)

        try:
            return self._local.call(what, job, timeout)
        except libvirt.libvirtError as exc:
            raise VirtError(exc.get_error_message()) from None

    def _checkout(self) -> libvirt.virConnect:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if _alive(conn):
                    return conn
        try:
            conn = libvirt.open(self.uri)
        except libvirt.libvirtError as exc:
            raise VirtError(f"cannot connect to libvirt at {self.uri}: {exc.get_error_message()}") from None
        if conn.setKeepAlive(*self.keepalive) != 0:  # 1: no keepalive on this connection; the deadlines still hold
            log.debug("libvirt keepalive not available on %s", self.uri)
        return conn

    def _checkin(self, conn: libvirt.virConnect) -> None:
        """Keep a connection for the next call; one that broke (or is not needed) is dropped: Python closes it."""
        if _alive(conn):
            with self._lock:
                if len(self._idle) < MAX_IDLE:
                    self._idle.append(conn)

    def remote_domains(self, uri: str, timeout: float) -> set[str] | None:
        """The active domains (UUIDs) of another node's libvirtd, over a connection of its own (closed after);
        None when it does not answer within `timeout` seconds (down, cut off, or not answering)."""

        def ask() -> set[str]:
            conn = libvirt.open(uri)
            try:
                return {d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}
            finally:
                conn.close()

        try:
            return self._remote.call("remote", ask, timeout)
        except (libvirt.libvirtError, VirtError):
            return None

    # -- domains -----------------------------------------------------------------------------------------------
    def domains(self, timeout: float = CALL_TIMEOUT) -> Domains:
        """The domains that live here (an incoming migration, paused until it completes, and a domain libvirt is
        still starting are not), with the memory and vCPUs they were given."""

        def collect(conn: libvirt.virConnect) -> Domains:
            running, mem, vcpus = [], 0, 0
            for dom in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
                with contextlib.suppress(libvirt.libvirtError):  # it ended meanwhile
                    state, reason = dom.state()
                    if state == libvirt.VIR_DOMAIN_RUNNING or (
                        state == libvirt.VIR_DOMAIN_PAUSED and reason not in NOT_YET_HERE
                    ):
                        info = dom.info()
                        running.append(dom.UUIDString())
                        mem += info[1] // 1024
                        vcpus += info[3]
            return Domains(sorted(running), mem, vcpus)

        return self.run("list", collect, timeout)

    def active_uuids(self) -> set[str]:
        """Every active domain, including paused incoming migrations."""
        return self.run(
            "list",
            lambda conn: {d.UUIDString() for d in conn.listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)},
        )

    def cpus_running(self, vm_uuid: str) -> bool:
        """True when the domain's CPUs run here. A migration's target resumes the domain only once the source has
        stopped it and handed over: before that it is paused."""

        def running(conn: libvirt.virConnect) -> bool:
            try:
                return conn.lookupByUUIDString(vm_uuid).state()[0] == libvirt.VIR_DOMAIN_RUNNING
            except libvirt.libvirtError:
                return False

        return self.run("state", running)

    def start(self, xml: str) -> None:
        self.run("start", lambda conn: conn.createXML(xml, 0))

    def destroy(self, vm_uuid: str) -> None:
        def destroy(conn: libvirt.virConnect) -> None:
            for attempt in range(3):
                try:
                    conn.lookupByUUIDString(vm_uuid).destroy()
                    return
                except libvirt.libvirtError as exc:
                    if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                        return
                    if attempt == 2:
                        raise
                    time.sleep(0.2)

        self.run("destroy", destroy)

    def shutdown(self, vm_uuid: str, timeout: float, stop: threading.Event | None = None) -> bool:
        """ACPI shutdown; destroy after `timeout`. Returns True if the guest shut down by itself."""

        def ask(conn: libvirt.virConnect) -> bool:
            try:
                dom = conn.lookupByUUIDString(vm_uuid)
            except libvirt.libvirtError:
                return False
            with contextlib.suppress(libvirt.libvirtError):
                dom.shutdown()
            return True

        if not self.run("shutdown", ask):
            return True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not (stop and stop.is_set()):
            if vm_uuid not in self.active_uuids():
                return True
            time.sleep(0.5)
        self.destroy(vm_uuid)
        return False

    def xml(self, vm_uuid: str) -> str | None:
        """The running domain's definition as libvirt has it now (hot-plugged devices included), without what only
        describes the running process (pty paths, device aliases, tap names); None when there is no such domain."""

        def describe(conn: libvirt.virConnect) -> str | None:
            try:
                return conn.lookupByUUIDString(vm_uuid).XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    return None
                raise

        return self.run("describe", describe)

    def device(self, vm_uuid: str, action: str, xml: str) -> None:
        """Hot-plug (`attach`), unplug (`detach`) or change (`update`) one device of a running domain, live only:
        the domain's definition is PVC's, re-rendered at every start. A detach asks the guest to release the device
        and returns once it has, or after libvirt's wait (the device may then go later, or at the next start)."""

        def change(conn: libvirt.virConnect) -> None:
            try:
                dom = conn.lookupByUUIDString(vm_uuid)
            except libvirt.libvirtError as exc:
                if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    raise VirtError("the domain is not running here") from None
                raise
            call = {"attach": dom.attachDeviceFlags, "detach": dom.detachDeviceFlags, "update": dom.updateDeviceFlags}
            call[action](xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)

        self.run(f"device {action}", change)

    def migrate(
        self,
        vm_uuid: str,
        dest_uri: str,
        max_downtime_ms: int,
        timeout: float,
        bandwidth_mib: int = 0,
    ) -> None:
        """Live migration, peer to peer (the source libvirtd dials the destination over TLS), with QEMU's migration
        stream over TLS too (formation/libvirt.py: the nodes' migration certificates, migrate_tls_force), auto-converge (QEMU
        throttles a guest that dirties memory faster than the link carries it) and a bandwidth cap (MiB/s; 0:
        none). A migration still running after `timeout` seconds is aborted (abortJob): MigrationTimeout. QEMU
        cancels it at once and the VM runs on here; libvirt's clean-up on the target can take longer (a target QEMU
        that does not answer), and is not waited for beyond ABORT_GRACE. The downtime limit and the abort go over
        connections of their own, while the migration's call holds its own."""
        flags = (
            libvirt.VIR_MIGRATE_LIVE
            | libvirt.VIR_MIGRATE_PEER2PEER
            | libvirt.VIR_MIGRATE_TLS
            | libvirt.VIR_MIGRATE_AUTO_CONVERGE
        )
        params = {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: bandwidth_mib}
        finished = threading.Event()
        aborted = threading.Event()

        def set_downtime() -> None:
            # The downtime limit applies to a running migration job: set it as soon as the job exists.
            while not finished.is_set():
                try:
                    self.run("downtime", lambda c: c.lookupByUUIDString(vm_uuid).migrateSetMaxDowntime(max_downtime_ms))
                    return
                except VirtError:
                    time.sleep(0.05)

        def deadline() -> None:
            if finished.wait(timeout):
                return
            aborted.set()
            log.warning("migration of %s to %s did not finish within %.0fs: aborting it", vm_uuid, dest_uri, timeout)
            try:
                self.run("abort", lambda c: c.lookupByUUIDString(vm_uuid).abortJob())
            except VirtError as exc:
                log.error("aborting the migration of %s failed: %s", vm_uuid, exc)

        def migrate(conn: libvirt.virConnect) -> None:
            try:
                dom = conn.lookupByUUIDString(vm_uuid)
            except libvirt.libvirtError:
                raise VirtError("the domain is not running here") from None
            threading.Thread(target=set_downtime, name="migrate-downtime", daemon=True).start()
            threading.Thread(target=deadline, name="migrate-deadline", daemon=True).start()
            dom.migrateToURI3(dest_uri, params, flags)

        try:
            # the abort ends the call; the call's own deadline covers a libvirt that does not end it
            self.run("migrate", migrate, timeout + ABORT_GRACE)
        except VirtError as exc:
            if aborted.is_set():
                raise MigrationTimeout(f"did not finish within {timeout:.0f}s and was aborted") from None
            raise exc from None
        finally:
            finished.set()


def _alive(conn: libvirt.virConnect) -> bool:
    try:
        return bool(conn.isAlive())  # the client's own view of the connection: no call to libvirtd
    except libvirt.libvirtError:
        return False
