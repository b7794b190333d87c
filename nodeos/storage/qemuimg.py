"""qemu-img on an uploaded image, in a sandbox: the image is an API client's input, so qemu-img reads it as an
unprivileged, limited process, and never follows a file name the image carries.

An image's header can name other files: a qcow2 a backing file or an external data file, a VMDK its extents and a
parent. Read as root, any host file (the join key, Ceph's keyrings, a disk) would be copied into the new volume,
which the client then downloads (security review C3, OpenStack's OSSA-2015-014 class). So:

- `inspect` runs `qemu-img info --output=json -f FORMAT` with the declared format (an image's format is never
  probed), and `check` refuses an image that names a backing file, an external data file or extents other than
  itself, is encrypted or marked corrupt, is not of the declared format, or is larger than allowed;
- `convert` writes it into an RBD image PVC created, the source given as JSON options with `"backing": null`, the
  target as `driver=rbd,pool=…,image=…` options: a volume name never reaches qemu-img's `rbd:pool/image:key=value`
  filename syntax (review H1);
- both run under prlimit (address space, CPU time, no core file) and a wall-clock timeout. When the API runs as
  root they also run as `nobody` through setpriv (no groups, no capabilities, no new privileges), and `inspect`
  in a network namespace of its own (no network at all). The image reaches them as an inherited file descriptor
  (/dev/fd/N) of a file chowned to nobody, and `convert` gets the Ceph configuration and key the same way, from
  memory files, so nobody needs no path on the host. An API that runs unprivileged runs them as itself.
"""

from __future__ import annotations

import contextlib
import json
import os
import pwd
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pvc.nodeos.storage.ceph import Invalid, StorageError

SANDBOX_USER = "nobody"
GiB = 1024**3
CONVERT_RATE = 20 * 1024**2  # bytes per second a conversion is given at least (plus CONVERT_GRACE)
CONVERT_GRACE = 300


@dataclass(frozen=True)
class Limits:
    timeout: int  # wall clock, seconds
    cpu: int  # CPU seconds
    memory: int  # bytes of address space


INSPECT_LIMITS = Limits(timeout=30, cpu=30, memory=1 * GiB)  # OpenStack's limits for qemu-img info


def convert_limits(virtual_size: int) -> Limits:
    seconds = CONVERT_GRACE + virtual_size // CONVERT_RATE
    return Limits(timeout=seconds, cpu=seconds, memory=2 * GiB)


@dataclass(frozen=True)
class RbdTarget:
    """Where `convert` writes, and how qemu-img reaches Ceph: the cluster's configuration file's text, the client
    id (`admin` for client.admin) and its cephx key."""

    pool: str
    image: str
    conf: bytes
    user: str
    key: str


CAP_SETGID, CAP_SETUID, CAP_SETPCAP, CAP_SYS_ADMIN = 6, 7, 8, 21


def capable(*caps: int) -> bool:
    """Whether this process holds every one of `caps` (effective set)."""
    try:
        status = Path("/proc/self/status").read_text(encoding="ascii")
    except OSError:
        return False
    effective = next((int(line.split()[1], 16) for line in status.splitlines() if line.startswith("CapEff:")), 0)
    return all(effective >> cap & 1 for cap in caps)


def sandbox_ids() -> tuple[int, int] | None:
    """(uid, gid) qemu-img runs as: nobody's while this process may change its user (root); None (itself) when
    it may not (an API that runs as a user of its own, or without the capabilities)."""
    if not capable(CAP_SETUID, CAP_SETGID, CAP_SETPCAP):
        return None
    try:
        entry = pwd.getpwnam(SANDBOX_USER)
    except KeyError:
        return 65534, 65534
    return entry.pw_uid, entry.pw_gid


def sandboxed(argv: list[str], limits: Limits, network: bool) -> list[str]:
    """`argv` under prlimit and setpriv (and, without `network`, in an empty network namespace when it may)."""
    cmd = ["prlimit", f"--as={limits.memory}", f"--cpu={limits.cpu}", "--core=0", "--"]
    ids = sandbox_ids()
    if ids is None:
        return [*cmd, "setpriv", "--no-new-privs", "--", *argv]
    if not network and capable(CAP_SYS_ADMIN):
        cmd += ["unshare", "--net", "--"]
    uid, gid = ids
    cmd += ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--inh-caps=-all", "--bounding-set=-all"]
    return [*cmd, "--no-new-privs", "--", *argv]


def give(fd: int) -> None:
    """Let the sandbox read the file open at `fd` (through /dev/fd/N): it becomes nobody's, read-only."""
    if (ids := sandbox_ids()) is not None:
        os.fchown(fd, *ids)
    os.fchmod(fd, 0o400)


@dataclass(frozen=True)
class Member:
    """A byte range of the file: an archive member (tar stores each contiguously), read in place through qemu's
    raw driver with an offset and a size, which it cannot read past."""

    offset: int
    size: int


def source_name(fd: int, member: Member | None = None) -> str:
    """The file qemu-img reads: /dev/fd/N, or a json: node for a member of it (also the name qemu-img gives the
    image's extent, which `check` compares)."""
    if member is None:
        return fd_path(fd)
    return "json:" + json.dumps(_file_node(fd, member))


def _file_node(fd: int, member: Member | None = None) -> dict[str, Any]:
    node = {"driver": "file", "filename": fd_path(fd)}
    if member is None:
        return node
    return {"driver": "raw", "offset": member.offset, "size": member.size, "file": node}


def inspect(fd: int, fmt: str, member: Member | None = None) -> dict[str, Any]:
    """`qemu-img info` of the image open at `fd` (or of its `member`), read as `fmt`; Invalid (the client's image)
    when it cannot."""
    if member is None:
        argv = ["qemu-img", "info", "--output=json", "-f", fmt, fd_path(fd)]
    else:  # the format is the JSON's driver: never probed either way
        argv = [
            "qemu-img",
            "info",
            "--output=json",
            "json:" + json.dumps({"driver": fmt, "file": _file_node(fd, member)}),
        ]
    out = _run(sandboxed(argv, INSPECT_LIMITS, network=False), INSPECT_LIMITS, [fd], "inspect the image", Invalid)
    try:
        info = json.loads(out)
    except ValueError:
        raise Invalid("qemu-img info did not answer with JSON", "body") from None
    if not isinstance(info, dict):
        raise Invalid("qemu-img info did not answer with a JSON object", "body")
    return info


def check(info: dict[str, Any], fmt: str, source: str, limit: int, why: str) -> int:
    """The image's virtual size, once `info` (of the image at `source`, /dev/fd/N) shows a self-contained image of
    format `fmt` of at most `limit` bytes; else Invalid saying what is refused."""
    if info.get("format") != fmt:
        raise Invalid(f"the body is not a {fmt} image (qemu-img reads it as {info.get('format')!r})", "format")
    backing = info.get("full-backing-filename") or info.get("backing-filename")
    if backing:
        raise Invalid(
            f"the image names a backing file ({backing!r}): upload a self-contained image "
            "(qemu-img convert -O qcow2 IMAGE OUT merges the chain)",
            "body",
        )
    data = (info.get("format-specific") or {}).get("data") or {}
    if data.get("data-file"):
        raise Invalid(
            f"the image names an external data file ({data['data-file']!r}): upload a self-contained image",
            "body",
        )
    outside = [e.get("filename") for e in data.get("extents") or [] if not _same_file(e.get("filename"), source)]
    if outside:
        raise Invalid(
            f"the VMDK names extent files outside itself ({', '.join(repr(f) for f in outside)}): only single-file "
            "VMDKs (monolithicSparse, streamOptimized) are accepted",
            "body",
        )
    if info.get("encrypted"):
        raise Invalid("the image is encrypted: upload a decrypted image", "body")
    if data.get("corrupt"):
        raise Invalid("the image is marked corrupt (repair it with qemu-img check -r all)", "body")
    size = info.get("virtual-size")
    if not isinstance(size, int) or size <= 0:
        raise Invalid(f"the image has no usable virtual size ({size!r})", "body")
    if size > limit:
        raise Invalid(f"the image's virtual size is {size} bytes, over the limit of {limit} bytes ({why})", "body")
    return size


def _same_file(name: object, source: str) -> bool:
    """Whether qemu-img's name of an extent is `source` (a json: name compared as JSON: qemu reorders keys)."""
    if not isinstance(name, str) or not name.startswith("json:") or not source.startswith("json:"):
        return name == source
    try:
        return bool(json.loads(name[5:]) == json.loads(source[5:]))
    except ValueError:
        return False


def convert(fd: int, fmt: str, virtual_size: int, target: RbdTarget, member: Member | None = None) -> None:
    """Write the image open at `fd` (or its `member`; checked by `check`) into the existing, empty RBD image
    `target`."""
    source = {"driver": fmt, "backing": None, "file": _file_node(fd, member)}
    limits = convert_limits(virtual_size)
    with _memory_file("ceph.conf", target.conf) as conf, _memory_file("key", target.key.encode()) as key:
        options = {
            "driver": "rbd",
            "pool": target.pool,
            "image": target.image,
            "conf": fd_path(conf),
            "user": target.user,
            "key-secret": "key0",
        }
        argv = [
            "qemu-img",
            "convert",
            "-n",  # the volume exists: PVC created it with its features
            "--target-is-zero",  # a new RBD image reads as zeros: unallocated clusters stay unwritten (sparse)
            "--object",
            f"secret,id=key0,file={fd_path(key)},format=base64",
            "json:" + json.dumps(source),
            "--target-image-opts",
            ",".join(f"{k}={_opt(v)}" for k, v in options.items()),
        ]
        _run(sandboxed(argv, limits, network=True), limits, [fd, conf, key], "convert the image", StorageError)


def fd_path(fd: int) -> str:
    return f"/dev/fd/{fd}"


def _opt(value: str) -> str:
    """A value in qemu's key=value,... option syntax: a comma is doubled."""
    return value.replace(",", ",,")


@contextlib.contextmanager
def _memory_file(name: str, data: bytes) -> Iterator[int]:
    fd = os.memfd_create(name)
    try:
        os.write(fd, data)
        yield fd
    finally:
        os.close(fd)


def _run(argv: list[str], limits: Limits, fds: list[int], what: str, error: type[StorageError]) -> str:
    try:
        out = subprocess.run(
            argv, pass_fds=fds, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=limits.timeout
        )
    except subprocess.TimeoutExpired:
        raise _error(error, f"qemu-img did not {what} within {limits.timeout} s") from None
    except OSError as exc:
        raise StorageError(f"cannot run qemu-img to {what}: {exc.strerror}") from None
    if out.returncode == -signal.SIGXCPU or out.returncode == -signal.SIGKILL:
        raise _error(error, f"qemu-img was stopped by its CPU limit ({limits.cpu} s) trying to {what}")
    if out.returncode != 0:
        said = " ".join(out.stderr.replace("qemu-img: ", "").split())[:500] or f"exit status {out.returncode}"
        raise _error(error, f"qemu-img could not {what}: {said}")
    return out.stdout


def _error(kind: type[StorageError], message: str) -> StorageError:
    return Invalid(message, "body") if kind is Invalid else kind(message)
