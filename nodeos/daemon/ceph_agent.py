"""pvcd's Ceph agent: this node's librados connection, the client.libvirt secret on this node's libvirtd and the
monitors QEMU dials (what `vmrender.Host` needs for RBD disks), lock checks before a VM starts, lock breaking for the
fencer, and the primary's storage-status controller. (The storage library it uses is `pvc.nodeos.storage`.)"""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING

import rados

from pvc.nodeos.daemon.watchdog import controller_thread
from pvc.nodeos.state.models import VmSpec
from pvc.nodeos.storage import locks, rbddisk, status
from pvc.nodeos.storage.ceph import Connection, StorageError

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)
RETRY_AFTER = 15.0  # seconds between connection attempts to an unreachable Ceph
OP_TIMEOUT = 10  # seconds a Ceph call of pvcd may take (the fencer and the start path wait on them)


class DiskLocked(Exception):
    pass


class DiskCheckFailed(Exception):
    """The disks' locks could not be checked: the VM does not start (fail closed), and the next pass tries again."""


class CephAgent:
    def __init__(self, daemon: Daemon, conffile: str, name: str = "client.admin") -> None:
        self.d = daemon
        self.conn = Connection(conffile, name, timeout=5, retry_after=RETRY_AFTER, op_timeout=OP_TIMEOUT)
        self.secret_uuid: str | None = None
        self.thread = controller_thread("storage-status", self._status_loop)

    def configured(self) -> bool:
        return self.conn.configured()

    def mons(self) -> list[tuple[str, int]]:
        try:
            with open(self.conn.conffile) as fh:
                return rbddisk.mons_from_conf(fh.read())
        except OSError:
            return []

    # -- libvirt ---------------------------------------------------------------------------------------------
    def define_secret(self) -> None:
        try:
            key = self.d.join_key
            self.secret_uuid = self.d.virt.run("secret", lambda conn: rbddisk.define_secret(conn, key), timeout=10)
            log.info("libvirt secret %s holds the client.libvirt key", self.secret_uuid)
        except Exception as exc:
            log.warning("could not define the client.libvirt secret: %s", exc)

    def ceph_secret(self) -> str:
        """The client.libvirt secret's UUID, defined on this node's libvirtd first if it is not yet ("" if that
        fails: a VM with RBD disks then fails to start, saying so)."""
        if self.secret_uuid is None:
            self.define_secret()
        return self.secret_uuid or ""

    def check_disks(self, spec: VmSpec) -> None:
        """Raise DiskLocked when one of the VM's disks is held by a live client (another QEMU writes it)."""
        self.check_volumes(spec.definition.volumes if spec.definition else [])

    def check_volumes(self, volumes: list[str]) -> None:
        """Raise DiskLocked when one of `volumes` (pool/volume) is held by a live client; DiskCheckFailed when
        Ceph cannot tell."""
        if not volumes:
            return

        def check(cluster: rados.Rados) -> None:
            for disk in volumes:
                pool, _, volume = disk.partition("/")
                holder = locks.live_holder(cluster, pool, volume)
                if holder is not None:
                    raise DiskLocked(f"disk {disk} is locked by a live client at {holder.address}")

        try:
            self.conn.run(check)
        except StorageError as exc:
            raise DiskCheckFailed(f"cannot verify its disks' locks: {exc}") from None

    # -- fencing ---------------------------------------------------------------------------------------------
    def break_locks(self, spec: VmSpec, dead: str) -> None:
        """Fencer hook: blocklist the dead node's clients on this VM's disks and break their locks."""
        disks = spec.definition.volumes if spec.definition else []
        if not disks:
            return
        node = self.d.cfg.node(dead)
        hosts = {str(a) for a in (node.ip.cluster, node.ip.upstream, getattr(node.ip, "storage", None)) if a}
        for disk in disks:
            pool, _, volume = disk.partition("/")
            broken = self.conn.run(functools.partial(locks.break_locks, pool=pool, name=volume, hosts=hosts))
            for address in broken:
                log.warning("VM %s: blocklisted %s (node %s) and broke its lock on %s", spec.name, address, dead, disk)

    # -- the primary's status controller ---------------------------------------------------------------------
    def start(self) -> None:
        if self.configured():
            self.thread.start()
        else:
            log.info("no Ceph configuration at %s: storage status not published by this node", self.conn.conffile)

    def _status_loop(self) -> None:
        interval = self.d.cfg.timers.keepalive_interval
        while not self.d.stopping.wait(interval):
            self.d.progress.beat("storage-status", allow=120)  # a few Ceph calls, each within its deadline
            if self.d.election is None or not self.d.election.is_primary.is_set():
                continue
            try:
                self.conn.run(lambda c: status.publish(self.d.state, c, by=self.d.node.name))
            except StorageError as exc:
                with contextlib.suppress(Exception):
                    status.unreachable(self.d.state, str(exc), by=self.d.node.name)
            except Exception:
                log.exception("storage status pass failed")
