"""Disk images for the upload tests, made with qemu-img: good ones in each format, and hostile ones whose header names
a file of the host.

Careful: `qemu-img create -o data_file=X` creates (truncates) X. The data-file image is therefore made pointing at
a scratch file of the test, which is then filled with secret bytes to play the host file; never point it at a real
file.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

MiB = 1024**2
SECRET = b"host secret: the join key would be here\n"


def qemu_img(*args: str) -> None:
    subprocess.run(["qemu-img", *args], check=True, capture_output=True, timeout=60)


def raw_disk(path: Path, data_mib: int = 2, hole_mib: int = 2) -> bytes:
    """A raw disk of random data, a hole of zeros, and more random data; its bytes."""
    data = os.urandom(data_mib * MiB) + b"\0" * (hole_mib * MiB) + os.urandom(MiB // 2)
    path.write_bytes(data)
    return data


def converted(raw: Path, out: Path, fmt: str, subformat: str | None = None) -> Path:
    """`raw` converted to `fmt` (qcow2, or vmdk with `subformat` monolithicSparse or streamOptimized)."""
    options = ["-o", f"subformat={subformat}"] if subformat else []
    qemu_img("convert", "-f", "raw", "-O", fmt, *options, str(raw), str(out))
    return out


def host_file(path: Path, mode: int = 0o600) -> Path:
    """A file playing a secret of the host (the join key, a keyring): root's, `mode`."""
    path.write_bytes(SECRET * 64)
    path.chmod(mode)
    return path


def with_backing_file(out: Path, backing: Path, size: str = "4M") -> Path:
    """A qcow2 overlay whose backing file is `backing` (-u: `backing` is not opened here)."""
    qemu_img("create", "-q", "-u", "-f", "qcow2", "-b", str(backing), "-F", "raw", str(out), size)
    return out


def with_data_file(out: Path, scratch: Path, size: str = "4M") -> Path:
    """A qcow2 whose guest data lives in the external raw file `scratch` (created here, then given secret bytes:
    converting the image would copy them)."""
    qemu_img("create", "-q", "-f", "qcow2", "-o", f"data_file={scratch},data_file_raw=on", str(out), size)
    with open(scratch, "r+b") as fh:
        fh.write(SECRET * 64)
    scratch.chmod(0o600)
    return out


def vmdk_with_extent(out: Path, extent: Path) -> Path:
    """A VMDK descriptor whose only extent is the host file `extent` (FLAT: read as the disk's bytes)."""
    sectors = extent.stat().st_size // 512
    out.write_text(
        '# Disk DescriptorFile\nversion=1\nCID=fffffffe\nparentCID=ffffffff\ncreateType="monolithicFlat"\n'
        f'RW {sectors} FLAT "{extent}" 0\n'
    )
    return out


def sparse_qcow2(out: Path, virtual_size: str) -> Path:
    """An empty qcow2 of `virtual_size` (a few hundred KiB on disk whatever it declares)."""
    qemu_img("create", "-q", "-f", "qcow2", str(out), virtual_size)
    return out
