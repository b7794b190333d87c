"""Volume uploads: an image streamed by an API client becomes a new volume; a failed upload leaves nothing behind.

raw goes straight into the new RBD image as it arrives (zero chunks skipped, so the volume stays sparse). qcow2 and
VMDK need random access: they are streamed to an unnamed spool file on PVCDATA (never held in RAM, never on the RAM
overlay's /tmp; the file has no name, so even a crash leaves nothing), inspected and converted by qemu-img in a
sandbox (qemuimg.py).

Every upload has a limit: the pool's room under the 80 % guard (its whole free space when forced), cluster.toml's
`[ceph] upload_max` when set, and for a spooled image also the spool's free space less a reserve, so that PVCDATA
(ZooKeeper, the mons, PostgreSQL) never fills. A Content-Length over it is refused before a byte of the body is
read, a chunked body as soon as it passes it, and a qcow2/VMDK whose virtual size is over the volume limit after
inspection.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

import rados
import rbd

from pvc.config.choices import IMAGE_FORMATS
from pvc.config.names import check_name
from pvc.nodeos.state.models import PoolRecord
from pvc.nodeos.storage import qemuimg
from pvc.nodeos.storage.ceph import Exists, Invalid, StorageError, TooLarge, own_key
from pvc.nodeos.storage.pools import FULL_RATIO, check_room, get_pool
from pvc.nodeos.storage.volumes import CHUNK, Volume, create_volume, get_volume, image, ioctx, remove_volume

DEFAULT_SPOOL = Path("/var/lib/pvc/upload")  # on PVCDATA
SPOOL_RESERVE = 0.10  # of the spool's file system stays free


class Body(Protocol):
    """What an upload reads: an HTTP request body, a file."""

    def read(self, size: int = -1, /) -> bytes: ...


@dataclass(frozen=True)
class Limit:
    bytes: int
    why: str


@dataclass(frozen=True)
class CephUser:
    """Who qemu-img connects to Ceph as: this process's own configuration file and client name."""

    conffile: str
    name: str = "client.admin"


def limit(pool: PoolRecord, force: bool, upload_max: int | None, spool_room: int | None = None) -> Limit:
    """The most bytes an upload into `pool` may send or expand to, and what sets it."""
    ratio = 1.0 if force else FULL_RATIO
    room = max(0, int(pool.capacity_bytes * ratio) - pool.stored_bytes)
    guard = "its capacity (forced)" if force else f"the {FULL_RATIO:.0%} guard"
    found = [Limit(room, f"the room left in pool '{pool.name}' under {guard}")]
    if upload_max is not None:
        found.append(Limit(upload_max, "[ceph] upload_max in cluster.toml"))
    if spool_room is not None:
        found.append(Limit(spool_room, f"the upload spool's free space, less {SPOOL_RESERVE:.0%} of its disk"))
    return min(found, key=lambda lim: lim.bytes)


def spool_room(spool: Path) -> int:
    """Bytes the spool folder may still take: its file system's free space less the reserve."""
    st = os.statvfs(spool)
    return max(0, st.f_bavail * st.f_frsize - int(st.f_blocks * st.f_frsize * SPOOL_RESERVE))


def upload(
    cluster: rados.Rados,
    user: CephUser,
    pool: str,
    name: str,
    stream: Body,
    length: int | None,
    fmt: str = "raw",
    force: bool = False,
    spool: Path = DEFAULT_SPOOL,
    upload_max: int | None = None,
) -> Volume:
    """Create volume `name` in `pool` from an image of format `fmt` read from `stream`: `length` bytes, or up to
    the end when None (a chunked body)."""
    if fmt not in IMAGE_FORMATS:
        raise Invalid(f"unsupported image format '{fmt}' ({', '.join(IMAGE_FORMATS)})", "format")
    for what, value in (("pool", pool), ("volume", name)):
        try:
            check_name(value, f"{what} name")
        except ValueError as exc:
            raise Invalid(str(exc), what) from None
    if length is not None and length <= 0:
        raise Invalid("the upload is empty", "body")
    record = get_pool(cluster, pool)
    check_room(record, force, f"upload {name}")
    with ioctx(cluster, pool) as ctx:
        if name in rbd.RBD().list(ctx):
            raise Exists(f"volume {pool}/{name} already exists")
    volume_limit = limit(record, force, upload_max)
    if fmt == "raw":
        _check_length(length, volume_limit)
        return _upload_raw(cluster, pool, name, stream, length, volume_limit, force)
    body_limit = spool_limit(record, force, upload_max, spool)
    with spooled(stream, length, spool, body_limit) as spooled_file:
        fd = spooled_file.fileno()
        size = inspected(fd, fmt, volume_limit)
        return convert_into(cluster, user, pool, name, fd, fmt, size, force=force)


def spool_limit(pool: PoolRecord, force: bool, upload_max: int | None, spool: Path) -> Limit:
    """The most bytes a spooled upload into `pool` may send (the spool folder made if it is not there)."""
    try:
        spool.mkdir(mode=0o700, parents=True, exist_ok=True)
        return limit(pool, force, upload_max, spool_room(spool))
    except OSError as exc:
        raise StorageError(f"cannot spool the upload in {spool}: {exc.strerror}") from None


@contextlib.contextmanager
def spooled(stream: Body, length: int | None, spool: Path, lim: Limit) -> Iterator[BinaryIO]:
    """The body in an unnamed file (O_TMPFILE) in `spool`, given to qemu-img's sandbox to read; gone on exit."""
    _check_length(length, lim)
    with tempfile.TemporaryFile(dir=spool, prefix="upload-") as spooled_file:
        _copy(stream, spooled_file.write, length, lim)
        spooled_file.flush()
        qemuimg.give(spooled_file.fileno())
        yield spooled_file


def inspected(fd: int, fmt: str, lim: Limit, member: qemuimg.Member | None = None) -> int:
    """The virtual size of the image of format `fmt` in the spooled file `fd` (or its `member`), once qemu-img
    shows it self-contained and within `lim`; Invalid saying what is refused otherwise."""
    info = qemuimg.inspect(fd, fmt, member)
    return qemuimg.check(info, fmt, qemuimg.source_name(fd, member), lim.bytes, lim.why)


def convert_into(
    cluster: rados.Rados,
    user: CephUser,
    pool: str,
    name: str,
    fd: int,
    fmt: str,
    size: int,
    member: qemuimg.Member | None = None,
    force: bool = False,
) -> Volume:
    """New volume `pool/name` of `size` bytes with the image checked by `inspected` written into it by qemu-img
    (straight from the spooled file: no second copy, no kernel RBD mapping); removed again if that fails."""
    conf = Path(user.conffile).read_bytes()  # this process is connected with it: it is readable
    target = qemuimg.RbdTarget(pool, name, conf, user.name.removeprefix("client."), own_key(cluster, user.name))
    create_volume(cluster, pool, name, size, force=force)
    with _removed_on_failure(cluster, pool, name):
        qemuimg.convert(fd, fmt, size, target, member)
    return get_volume(cluster, pool, name)


def _check_length(length: int | None, lim: Limit) -> None:
    if length is not None and length > lim.bytes:
        raise TooLarge(f"the upload is {length} bytes, over the limit of {lim.bytes} bytes ({lim.why})")


def _upload_raw(
    cluster: rados.Rados, pool: str, name: str, stream: Body, length: int | None, lim: Limit, force: bool
) -> Volume:
    """raw: into the new volume as it arrives. A chunked body's volume is made as large as the limit, then cut to
    what arrived (RBD images are thin: the size costs nothing until written)."""
    if lim.bytes <= 0:
        raise TooLarge(f"no upload fits: the limit is 0 bytes ({lim.why})")
    create_volume(cluster, pool, name, length or lim.bytes, force=force)
    with _removed_on_failure(cluster, pool, name), image(cluster, pool, name) as img:
        offset = 0

        def write(chunk: bytes) -> None:
            nonlocal offset
            if chunk.count(0) != len(chunk):
                img.write(chunk, offset)
            offset += len(chunk)

        _copy(stream, write, length, lim)
        if length is None:
            if offset == 0:
                raise Invalid("the upload is empty", "body")
            img.resize(offset)
    return get_volume(cluster, pool, name)


@contextlib.contextmanager
def _removed_on_failure(cluster: rados.Rados, pool: str, name: str):  # type: ignore[no-untyped-def]
    try:
        yield
    except BaseException:
        with contextlib.suppress(Exception):
            remove_volume(cluster, pool, name)
        raise


def _copy(stream: Body, write: Callable[[bytes], object], length: int | None, lim: Limit) -> None:
    """`length` bytes from `stream` (or up to its end, at most the limit) to `write`, in CHUNK pieces."""
    done = 0
    buf = bytearray()
    while length is None or done < length:
        want = CHUNK - len(buf) if length is None else min(CHUNK - len(buf), length - done)
        piece = stream.read(want)
        if not piece:
            if length is not None:
                raise Invalid(f"the upload ended after {done} of {length} bytes", "body")
            break
        done += len(piece)
        if done > lim.bytes:
            raise TooLarge(f"the upload passed the limit of {lim.bytes} bytes ({lim.why})")
        buf += piece
        if len(buf) >= CHUNK:
            _write(write, bytes(buf))
            buf.clear()
    if buf:
        _write(write, bytes(buf))


def _write(write: Callable[[bytes], object], chunk: bytes) -> None:
    try:
        write(chunk)
    except OSError as exc:  # the spool file
        raise StorageError(f"cannot spool the upload: {exc.strerror}") from None
