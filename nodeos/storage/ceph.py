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


class Refused(StorageError):
    """Not done because it would be unsafe (full pool, last copies, no confirmation) unless forced."""


@contextlib.contextmanager
def connect(
    conffile: str, name: str = "client.admin", keyring: str | None = None, timeout: int = 10
) -> Iterator[rados.Rados]:
    conf = {"keyring": keyring} if keyring else {}
    cluster = rados.Rados(conffile=conffile, name=name, conf=conf)
    try:
        cluster.connect(timeout=timeout)
    except rados.Error as exc:
        raise StorageError(f"cannot connect to Ceph ({conffile}): {exc}") from None
    try:
        yield cluster
    finally:
        cluster.shutdown()


def mon_command(cluster: rados.Rados, prefix: str, **args: Any) -> Any:
    """Run a monitor command; returns its JSON answer (or None)."""
    cmd = json.dumps({"prefix": prefix, "format": "json", **args})
    ret, out, err = cluster.mon_command(cmd, b"", timeout=30)
    if ret != 0:
        message = err.strip() or errno.errorcode.get(-ret, str(ret))
        if ret == -errno.ENOENT:
            raise NotFound(message)
        raise StorageError(f"ceph {prefix}: {message}")
    return json.loads(out) if out.strip() else None
