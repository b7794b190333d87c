"""A connection to Ceph and its monitor commands, with Ceph's errors turned into StorageError."""

from __future__ import annotations

import contextlib
import errno
import json
from collections.abc import Iterator
from typing import Any

import rados


class StorageError(Exception):
    """A storage operation failed or was refused; the message says why."""


class NotFound(StorageError):
    pass


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


@contextlib.contextmanager
def connect(
    conffile: str, name: str = "client.admin", keyring: str | None = None, timeout: int = 10
) -> Iterator[rados.Rados]:
    conf = {"keyring": keyring} if keyring else {}
    cluster = rados.Rados(conffile=conffile, name=name, conf=conf)
    try:
        cluster.connect(timeout=timeout)
    except rados.Error as exc:
        raise Unavailable(f"cannot connect to Ceph ({conffile}): {exc}") from None
    try:
        yield cluster
    finally:
        cluster.shutdown()


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


def _answer(prefix: str, ret: int, out: bytes, err: str) -> Any:
    if ret == -errno.ETIMEDOUT:
        raise Unavailable(f"ceph {prefix}: no answer from Ceph")
    if ret != 0:
        message = err.strip() or errno.errorcode.get(-ret, str(ret))
        if ret == -errno.ENOENT:
            raise NotFound(message)
        raise StorageError(f"ceph {prefix}: {message}")
    text = out.decode(errors="replace").strip() if isinstance(out, bytes) else str(out).strip()
    if not text:
        return None
    return json.JSONDecoder().raw_decode(text)[0]  # some commands add a line of text after the JSON
