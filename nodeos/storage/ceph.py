"""The connection to Ceph and its monitor commands, with Ceph's errors turned into StorageError.

`Connection` is the one librados connection a process keeps (the API worker's, pvcd's Ceph agent's): made on first
use and made again after it failed. `connect()` is a connection for one block of work (tests, benchmarks,
formation).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import rados
import rbd

T = TypeVar("T")


class StorageError(Exception):
    """A storage operation failed or was refused; the message says why."""


class Missing(StorageError):
    """The pool, volume, snapshot or OSD named does not exist (the API answers 404, as for the state's NotFound)."""


class Exists(StorageError):
    """The object to create already exists."""


class Invalid(StorageError):
    """A bad argument; `field` names it."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class Refused(StorageError):
    """Not done because it would be unsafe (full pool, last copies, no confirmation) unless forced."""


class Unavailable(StorageError):
    """Ceph did not answer."""


class TooLarge(StorageError):
    """More bytes than allowed (an upload over its limit); the message gives the figures."""


class Connection:
    """A lazy librados connection that reconnects. Thread-safe.

    `run(op)` calls `op` with the connected cluster and turns what librados and librbd raise into StorageError;
    a failure of the connection itself (Unavailable) drops it, and the next call connects again, but not sooner
    than `retry_after` seconds after a failed attempt (so a daemon does not hammer an unreachable Ceph).
    """

    def __init__(
        self,
        conffile: str,
        name: str = "client.admin",
        keyring: str | None = None,
        timeout: int = 10,
        retry_after: float = 0.0,
    ) -> None:
        self.conffile, self.name, self.keyring = conffile, name, keyring
        self.timeout, self.retry_after = timeout, retry_after
        self._cluster: rados.Rados | None = None
        self._failed_at: float | None = None
        self._lock = threading.Lock()

    def configured(self) -> bool:
        return os.path.exists(self.conffile)

    def cluster(self) -> rados.Rados:
        """The connected cluster; Unavailable when there is no configuration or Ceph does not answer."""
        with self._lock:
            if self._cluster is not None:
                return self._cluster
            if not self.configured():
                raise Unavailable(f"no Ceph configuration at {self.conffile}")
            if self._failed_at is not None and time.monotonic() - self._failed_at < self.retry_after:
                raise Unavailable(f"Ceph was unreachable moments ago ({self.conffile})")
            cluster = rados.Rados(
                conffile=self.conffile, name=self.name, conf={"keyring": self.keyring} if self.keyring else {}
            )
            try:
                cluster.connect(timeout=self.timeout)
            except rados.Error as exc:
                self._failed_at = time.monotonic()
                with contextlib.suppress(Exception):
                    cluster.shutdown()
                raise Unavailable(f"cannot connect to Ceph ({self.conffile}): {exc}") from None
            self._cluster = cluster
            return cluster

    def run(self, op: Callable[[rados.Rados], T]) -> T:
        try:
            return op(self.cluster())
        except (rados.Error, rbd.Error) as exc:
            error = storage_error(exc, self.name)
            if isinstance(error, Unavailable):
                self.drop()
            raise error from None

    def drop(self) -> None:
        """Forget a connection that failed: the next use makes a new one."""
        self.close()
        self._failed_at = time.monotonic()

    def close(self) -> None:
        with self._lock:
            cluster, self._cluster = self._cluster, None
        if cluster is not None:
            with contextlib.suppress(Exception):  # it may be broken already
                cluster.shutdown()


@contextlib.contextmanager
def connect(
    conffile: str, name: str = "client.admin", keyring: str | None = None, timeout: int = 10
) -> Iterator[rados.Rados]:
    """A connection for the block's duration; Unavailable when Ceph does not answer."""
    conn = Connection(conffile, name, keyring, timeout)
    try:
        yield conn.cluster()
    finally:
        conn.close()


def own_key(cluster: rados.Rados, name: str) -> str:
    """The cephx key `cluster` authenticates `name` (e.g. client.admin) with: its `key` setting, or the entry for
    `name` in the first of its keyring files that has one. For a child process (qemu-img) that cannot read them."""
    if key := cluster.conf_get("key"):
        return str(key)
    for path in str(cluster.conf_get("keyring") or "").split(","):
        try:
            text = Path(path.strip()).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue  # missing, unreadable or keyring.bin
        section = None
        for line in text.splitlines():
            line = line.strip()
            if line.startswith("[") and line.endswith("]"):
                section = line[1:-1].strip()
            elif section == name and line.partition("=")[0].strip() == "key":
                return line.partition("=")[2].strip()
    raise StorageError(f"no cephx key for {name} in its keyring ({cluster.conf_get('keyring')})")


def storage_error(exc: rados.Error | rbd.Error, user: str = "client.admin") -> StorageError:
    """The StorageError for a librados or librbd error the storage layer did not foresee: still an answer (not
    found, exists, refused, invalid), and Unavailable only when Ceph itself did not answer."""
    if isinstance(exc, rbd.Error):
        kind = {
            rbd.InvalidArgument: Invalid,
            rbd.ImageNotFound: Missing,
            rbd.ImageExists: Exists,
            rbd.ImageBusy: Refused,
            rbd.ImageHasSnapshots: Refused,
        }.get(type(exc), StorageError)
        return kind(f"Ceph refused: {exc}")
    if isinstance(exc, rados.ObjectNotFound):
        return Missing(f"Ceph: {exc}")
    if isinstance(exc, rados.ObjectExists):
        return Exists(f"Ceph: {exc}")
    if isinstance(exc, rados.PermissionError):
        return Refused(f"Ceph denied it to {user}: {exc}")
    return Unavailable(f"Ceph did not answer: {exc}")


def mon_command(cluster: rados.Rados, prefix: str, **args: Any) -> Any:
    """Run a monitor command; returns its JSON answer (or None)."""
    cmd = json.dumps({"prefix": prefix, "format": "json", **args})
    ret, out, err = cluster.mon_command(cmd, b"", timeout=30)
    return _answer(prefix, ret, out, err)


def mgr_command(cluster: rados.Rados, prefix: str, **args: Any) -> Any:
    """Run a manager command (osd df, osd safe-to-destroy, osd ok-to-stop ...); returns its JSON answer."""
    cmd = json.dumps({"prefix": prefix, "format": "json", **args})
    ret, out, err = cluster.mgr_command(cmd, b"", timeout=30)
    return _answer(prefix, ret, out, err)


def _answer(prefix: str, ret: int, out: bytes | str, err: str) -> Any:
    if ret == -errno.ETIMEDOUT:
        raise Unavailable(f"ceph {prefix}: no answer from Ceph")
    if ret != 0:
        message = err.strip() or errno.errorcode.get(-ret, str(ret))
        if ret == -errno.ENOENT:
            raise Missing(message)
        raise StorageError(f"ceph {prefix}: {message}")
    text = out.decode(errors="replace").strip() if isinstance(out, bytes) else str(out).strip()
    if not text:
        return None
    return json.JSONDecoder().raw_decode(text)[0]  # some commands add a line of text after the JSON
