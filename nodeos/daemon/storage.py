"""pvcd's storage side: one librados connection (lazy, re-made after failures), the client.libvirt secret on this
node's libvirtd, RBD disk completion and lock checks before a VM starts, lock breaking for the fencer, and the
primary's storage-status controller."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from typing import TYPE_CHECKING

import rados

from pvc.config.secrets import read_join_key
from pvc.nodeos.state import domxml
from pvc.nodeos.state.models import VmSpec
from pvc.nodeos.storage import locks, rbddisk, status
from pvc.nodeos.storage.ceph import StorageError

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)
RETRY_AFTER = 15.0  # seconds between connection attempts to an unreachable Ceph


class DiskLocked(Exception):
    pass


class StorageAgent:
    def __init__(self, daemon: Daemon, conffile: str, name: str = "client.admin") -> None:
        self.d = daemon
        self.conffile = conffile
        self.name = name
        self._cluster: rados.Rados | None = None
        self._failed_at = 0.0
        self._lock = threading.Lock()
        self.secret_uuid: str | None = None
        self.thread = threading.Thread(target=self._status_loop, name="storage-status", daemon=True)

    # -- the connection --------------------------------------------------------------------------------------
    def configured(self) -> bool:
        return os.path.exists(self.conffile)

    def cluster(self) -> rados.Rados:
        with self._lock:
            if self._cluster is not None:
                return self._cluster
            if not self.configured():
                raise StorageError(f"no Ceph configuration at {self.conffile}")
            if time.monotonic() - self._failed_at < RETRY_AFTER:
                raise StorageError("Ceph was unreachable moments ago")
            c = rados.Rados(conffile=self.conffile, name=self.name)
            try:
                c.connect(timeout=5)
            except rados.Error as exc:
                self._failed_at = time.monotonic()
                with contextlib.suppress(Exception):
                    c.shutdown()
                raise StorageError(f"cannot connect to Ceph ({self.conffile}): {exc}") from None
            self._cluster = c
            return c

    def reset(self) -> None:
        with self._lock:
            if self._cluster is not None:
                with contextlib.suppress(Exception):
                    self._cluster.shutdown()
            self._cluster = None
            self._failed_at = time.monotonic()

    def mons(self) -> list[tuple[str, int]]:
        try:
            with open(self.conffile) as fh:
                return rbddisk.mons_from_conf(fh.read())
        except OSError:
            return []

    # -- libvirt ---------------------------------------------------------------------------------------------
    def define_secret(self) -> None:
        try:
            self.secret_uuid = rbddisk.define_secret(self.d.virt.conn(), read_join_key(self.d.cfg, self.d.base_dir))
            log.info("libvirt secret %s holds the client.libvirt key", self.secret_uuid)
        except Exception as exc:
            log.warning("could not define the client.libvirt secret: %s", exc)

    def prepare(self, spec: VmSpec, xml: str) -> str:
        """The domain XML to start: RBD disks completed with monitors and secret. Raises DiskLocked when a disk
        is held by a live client (another QEMU writes it)."""
        disks = domxml.parse(xml).rbd_disks
        if not disks:
            return xml
        if self.secret_uuid is None:
            self.define_secret()
        xml = rbddisk.complete_disks(xml, self.mons(), self.secret_uuid or "")
        try:
            cluster = self.cluster()
            for disk in disks:
                pool, _, volume = disk.partition("/")
                holder = locks.live_holder(cluster, pool, volume)
                if holder is not None:
                    raise DiskLocked(f"disk {disk} is locked by a live client at {holder.address}")
        except StorageError as exc:
            log.warning("VM %s: cannot check its disks' locks: %s", spec.name, exc)
        except rados.Error as exc:
            self.reset()
            log.warning("VM %s: cannot check its disks' locks: %s", spec.name, exc)
        return xml

    # -- fencing ---------------------------------------------------------------------------------------------
    def break_locks(self, spec: VmSpec, dead: str) -> None:
        """Fencer hook: blocklist the dead node's clients on this VM's disks and break their locks."""
        disks = domxml.parse(spec.xml).rbd_disks
        if not disks:
            return
        node = self.d.cfg.node(dead)
        hosts = {str(a) for a in (node.ip.cluster, node.ip.upstream, getattr(node.ip, "storage", None)) if a}
        cluster = self.cluster()
        for disk in disks:
            pool, _, volume = disk.partition("/")
            broken = locks.break_locks(cluster, pool, volume, hosts)
            for address in broken:
                log.warning("VM %s: blocklisted %s (node %s) and broke its lock on %s", spec.name, address, dead, disk)

    # -- the primary's status controller ---------------------------------------------------------------------
    def start(self) -> None:
        if self.configured():
            self.thread.start()
        else:
            log.info("no Ceph configuration at %s: storage status not published by this node", self.conffile)

    def _status_loop(self) -> None:
        interval = self.d.cfg.timers.keepalive_interval
        while not self.d.stopping.wait(interval):
            if self.d.election is None or not self.d.election.is_primary.is_set():
                continue
            try:
                status.publish(self.d.state, self.cluster(), by=self.d.node.name)
            except (StorageError, rados.Error) as exc:
                if isinstance(exc, rados.Error):
                    self.reset()
                with contextlib.suppress(Exception):
                    status.unreachable(self.d.state, str(exc), by=self.d.node.name)
            except Exception:
                log.exception("storage status pass failed")
