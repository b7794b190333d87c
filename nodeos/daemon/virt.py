"""A thin libvirt layer for pvcd: one connection, reopened when it breaks; domains by UUID."""

from __future__ import annotations

import contextlib
import logging
import threading
import time

import libvirt

log = logging.getLogger(__name__)

# Keep libvirt's own error printing out of the daemon's log: errors reach us as exceptions.
libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


class VirtError(Exception):
    pass


# Paused domains that do not (yet) run on this node: an incoming migration, and one libvirt is still starting.
NOT_YET_HERE = (libvirt.VIR_DOMAIN_PAUSED_MIGRATION, libvirt.VIR_DOMAIN_PAUSED_STARTING_UP)


class Virt:
    def __init__(self, uri: str) -> None:
        self.uri = uri
        self._conn: libvirt.virConnect | None = None
        self._lock = threading.Lock()

    def conn(self) -> libvirt.virConnect:
        with self._lock:
            if self._conn is not None:
                try:
                    if self._conn.isAlive():
                        return self._conn
                except libvirt.libvirtError:
                    pass
                with contextlib.suppress(libvirt.libvirtError):
                    self._conn.close()
            try:
                self._conn = libvirt.open(self.uri)
            except libvirt.libvirtError as exc:
                self._conn = None
                raise VirtError(f"cannot connect to libvirt at {self.uri}: {exc.get_error_message()}") from None
            return self._conn

    def domain(self, vm_uuid: str) -> libvirt.virDomain | None:
        try:
            return self.conn().lookupByUUIDString(vm_uuid)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise VirtError(exc.get_error_message()) from None

    def running(self) -> dict[str, libvirt.virDomain]:
        """Domains that live here: running, or paused by someone (an incoming migration, paused until it completes
        and `starting up` while libvirt prepares it, is not one of them)."""
        out = {}
        for dom in self.conn().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE):
            with contextlib.suppress(libvirt.libvirtError):
                state, reason = dom.state()
                if state == libvirt.VIR_DOMAIN_RUNNING or (
                    state == libvirt.VIR_DOMAIN_PAUSED and reason not in NOT_YET_HERE
                ):
                    out[dom.UUIDString()] = dom
        return out

    def cpus_running(self, vm_uuid: str) -> bool:
        """True when the domain's CPUs run here. A migration's target resumes the domain only once the source has
        stopped it and handed over: before that it is paused."""
        dom = self.domain(vm_uuid)
        if dom is None:
            return False
        try:
            return dom.state()[0] == libvirt.VIR_DOMAIN_RUNNING
        except libvirt.libvirtError:
            return False

    def active_uuids(self) -> set[str]:
        """Every active domain, including paused incoming migrations."""
        return {d.UUIDString() for d in self.conn().listAllDomains(libvirt.VIR_CONNECT_LIST_DOMAINS_ACTIVE)}

    def start(self, xml: str) -> None:
        try:
            self.conn().createXML(xml, 0)
        except libvirt.libvirtError as exc:
            raise VirtError(exc.get_error_message()) from None

    def destroy(self, vm_uuid: str) -> None:
        dom = self.domain(vm_uuid)
        if dom is None:
            return
        for attempt in range(3):
            try:
                dom.destroy()
                return
            except libvirt.libvirtError as exc:
                if exc.get_error_code() in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                    return
                if attempt == 2:
                    raise VirtError(exc.get_error_message()) from None
                time.sleep(0.2)

    def shutdown(self, vm_uuid: str, timeout: float, stop: threading.Event | None = None) -> bool:
        """ACPI shutdown; destroy after `timeout`. Returns True if the guest shut down by itself."""
        dom = self.domain(vm_uuid)
        if dom is None:
            return True
        with contextlib.suppress(libvirt.libvirtError):
            dom.shutdown()
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
        dom = self.domain(vm_uuid)
        if dom is None:
            return None
        try:
            return dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)
        except libvirt.libvirtError as exc:
            if exc.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise VirtError(exc.get_error_message()) from None

    def device(self, vm_uuid: str, action: str, xml: str) -> None:
        """Hot-plug (`attach`), unplug (`detach`) or change (`update`) one device of a running domain, live only:
        the domain's definition is PVC's, re-rendered at every start. A detach asks the guest to release the device
        and returns once it has, or after libvirt's wait (the device may then go later, or at the next start)."""
        dom = self.domain(vm_uuid)
        if dom is None:
            raise VirtError("the domain is not running here")
        call = {"attach": dom.attachDeviceFlags, "detach": dom.detachDeviceFlags, "update": dom.updateDeviceFlags}
        try:
            call[action](xml, libvirt.VIR_DOMAIN_AFFECT_LIVE)
        except libvirt.libvirtError as exc:
            raise VirtError(exc.get_error_message()) from None

    def migrate(self, vm_uuid: str, dest_uri: str, max_downtime_ms: int) -> None:
        """Live migration, peer to peer (the source libvirtd dials the destination over TLS), with QEMU's migration
        stream over TLS too (formation/libvirt.py: the nodes' migration certificates, migrate_tls_force)."""
        dom = self.domain(vm_uuid)
        if dom is None:
            raise VirtError("the domain is not running here")
        flags = libvirt.VIR_MIGRATE_LIVE | libvirt.VIR_MIGRATE_PEER2PEER | libvirt.VIR_MIGRATE_TLS
        params = {libvirt.VIR_MIGRATE_PARAM_BANDWIDTH: 0}
        stop = threading.Event()

        def set_downtime() -> None:
            # The downtime limit applies to a running migration job: set it as soon as the job exists.
            while not stop.is_set():
                try:
                    dom.migrateSetMaxDowntime(max_downtime_ms, 0)
                    return
                except libvirt.libvirtError:
                    time.sleep(0.02)

        setter = threading.Thread(target=set_downtime, daemon=True)
        setter.start()
        try:
            dom.migrateToURI3(dest_uri, params, flags)
        except libvirt.libvirtError as exc:
            raise VirtError(exc.get_error_message()) from None
        finally:
            stop.set()
