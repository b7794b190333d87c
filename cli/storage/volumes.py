"""`pvc storage volume ...`: volumes (RBD images): create, resize, rename, clone, copy, upload, download, remove."""

from __future__ import annotations

import os
import sys
from typing import BinaryIO

import click

from pvc.cli.aliases import AliasGroup
from pvc.cli.client import ApiError, from_context
from pvc.cli.errors import Failure
from pvc.cli.output import emit, format_option, table
from pvc.cli.storage.pools import pool_path
from pvc.cli.storage.sizes import human, size_value
from pvc.config.choices import IMAGE_FORMATS


@click.group(cls=AliasGroup)
def volume() -> None:
    """Volumes (RBD images): create, resize, rename, clone, copy, upload, download, remove."""


def volume_rows(data: list[dict]) -> str:
    rows = [(v["pool"], v["name"], human(v["size"]), v["snapshots"], v["parent"]) for v in data]
    return table(["pool", "name", "size", "snapshots", "parent"], rows)


@volume.command("list")
@click.argument("pool")
@format_option
def volume_list(pool: str, fmt: str) -> None:
    """Volumes of POOL."""
    emit(from_context().get(pool_path(pool, "volumes")), fmt, volume_rows)


@volume.command("info")
@click.argument("pool")
@click.argument("name")
@format_option
def volume_info(pool: str, name: str, fmt: str) -> None:
    """One volume."""
    emit(from_context().get(pool_path(pool, "volumes", name)), fmt, lambda v: volume_rows([v]))


force_option = click.option("--force", is_flag=True, help="Even when the pool is over 80 % full.")


@volume.command("add")
@click.argument("pool")
@click.argument("name")
@click.argument("size", callback=size_value)
@force_option
@format_option
def volume_add(pool: str, name: str, size: int, force: bool, fmt: str) -> None:
    """Create volume NAME of SIZE (e.g. 20G) in POOL."""
    data = from_context().post(pool_path(pool, "volumes"), {"name": name, "size": size, "force": force})
    emit(data, fmt, lambda v: f"created volume {v['pool']}/{v['name']} ({human(v['size'])})")


@volume.command("resize")
@click.argument("pool")
@click.argument("name")
@click.argument("size", callback=size_value)
@force_option
@format_option
def volume_resize(pool: str, name: str, size: int, force: bool, fmt: str) -> None:
    """Grow volume NAME to SIZE (shrinking is refused)."""
    data = from_context().patch(pool_path(pool, "volumes", name), {"size": size, "force": force})
    emit(data, fmt, lambda v: f"volume {v['pool']}/{v['name']} is now {human(v['size'])}")


@volume.command("rename")
@click.argument("pool")
@click.argument("name")
@click.argument("new_name")
@format_option
def volume_rename(pool: str, name: str, new_name: str, fmt: str) -> None:
    """Rename volume NAME to NEW_NAME."""
    data = from_context().patch(pool_path(pool, "volumes", name), {"name": new_name})
    emit(data, fmt, lambda v: f"renamed {pool}/{name} to {v['pool']}/{v['name']}")


@volume.command("clone")
@click.argument("pool")
@click.argument("name")
@click.argument("snapshot")
@click.argument("new_name")
@force_option
@format_option
def volume_clone(pool: str, name: str, snapshot: str, new_name: str, force: bool, fmt: str) -> None:
    """Clone NAME@SNAPSHOT into a new copy-on-write volume NEW_NAME."""
    data = from_context().post(
        pool_path(pool, "volumes", name, "clone"), {"snapshot": snapshot, "name": new_name, "force": force}
    )
    emit(data, fmt, lambda v: f"cloned {pool}/{name}@{snapshot} to {v['pool']}/{v['name']}")


@volume.command("copy")
@click.argument("pool")
@click.argument("name")
@click.argument("new_name")
@click.option("--to-pool", help="Destination pool (default: the same).")
@force_option
@format_option
def volume_copy(pool: str, name: str, new_name: str, to_pool: str | None, force: bool, fmt: str) -> None:
    """Copy volume NAME to NEW_NAME (a full, independent copy)."""
    data = from_context().post(
        pool_path(pool, "volumes", name, "copy"), {"name": new_name, "pool": to_pool, "force": force}
    )
    emit(data, fmt, lambda v: f"copied {pool}/{name} to {v['pool']}/{v['name']}")


@volume.command("remove")
@click.argument("pool")
@click.argument("name")
def volume_remove(pool: str, name: str) -> None:
    """Remove volume NAME and its snapshots (refused while a running VM holds it)."""
    from_context().delete(pool_path(pool, "volumes", name))
    click.echo(f"removed volume {pool}/{name}")


class ByteProgress:
    """Percentages on standard error as bytes go by (a line per 10 %, or a bar on a terminal)."""

    def __init__(self, label: str, total: int | None, quiet: bool) -> None:
        self.label, self.total, self.done = label, total, 0
        self.quiet = quiet
        self.tty = sys.stderr.isatty()
        self.shown = -1

    def add(self, n: int) -> None:
        self.done += n
        if self.quiet:
            return
        if not self.total:
            return
        percent = min(100, self.done * 100 // self.total)
        step = percent if self.tty else percent // 10 * 10
        if step != self.shown:
            self.shown = step
            text = f"{self.label}: {percent}% ({human(self.done)} of {human(self.total)})"
            click.echo(("\r" + text) if self.tty else text, err=True, nl=not self.tty or percent == 100)


class Counting:
    def __init__(self, fh: BinaryIO, progress: ByteProgress) -> None:
        self.fh, self.progress = fh, progress

    def read(self, n: int = -1) -> bytes:
        data = self.fh.read(n)
        self.progress.add(len(data))
        return data


DESCRIPTOR = b"# Disk DescriptorFile"  # a VMDK descriptor (its data lives in other files: the API refuses it)


def image_format_of(head: bytes) -> str:
    """An image's format from its first bytes: qcow2 and VMDK by their magic, anything else is raw."""
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head.startswith((b"KDMV", b"COWD", DESCRIPTOR)):
        return "vmdk"
    return "raw"


@volume.command("upload")
@click.argument("pool")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option(
    "--image-format", "image_format", type=click.Choice(IMAGE_FORMATS), help="Default: from the file's contents."
)
@click.option("--quiet", is_flag=True, help="No progress on standard error.")
@force_option
@format_option
def volume_upload(
    pool: str, name: str, file: str, image_format: str | None, quiet: bool, force: bool, fmt: str
) -> None:
    """Create volume NAME in POOL from FILE, a raw, qcow2 or single-file VMDK disk image (progress on standard
    error). The API refuses an image that names other files (a backing file, a data file, VMDK extents)."""
    size = os.path.getsize(file)
    c = from_context()
    try:  # refuse before sending the whole file
        c.get(pool_path(pool, "volumes", name))
        raise Failure(f"volume {pool}/{name} already exists")
    except ApiError as exc:
        if exc.status != 404 or "no pool" in str(exc):
            raise
    with open(file, "rb") as fh:
        if image_format is None:
            image_format = image_format_of(fh.read(len(DESCRIPTOR)))
            fh.seek(0)
        progress = ByteProgress(f"upload {os.path.basename(file)}", size, quiet)
        data = c.upload(
            pool_path(pool, "volumes", name, "data"),
            Counting(fh, progress),
            size,
            {"format": image_format, "force": "true" if force else None},
        )
    emit(
        data, fmt, lambda v: f"uploaded {file} ({image_format}) to volume {v['pool']}/{v['name']} ({human(v['size'])})"
    )


@volume.command("download")
@click.argument("pool")
@click.argument("name")
@click.argument("file", type=click.Path(dir_okay=False, writable=True, allow_dash=True))
@click.option("--snapshot", help="Download this snapshot of the volume instead.")
@click.option("--quiet", is_flag=True, help="No progress on standard error.")
def volume_download(pool: str, name: str, file: str, snapshot: str | None, quiet: bool) -> None:
    """Write volume NAME (raw) to FILE (- for standard output), with progress on standard error."""
    out = sys.stdout.buffer if file == "-" else None
    progress: ByteProgress | None = None
    try:
        fh = out or open(file, "wb")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise Failure(f"cannot write {file}: {exc.strerror}") from None

    def sink(chunk: bytes | int | None) -> None:
        nonlocal progress
        if progress is None:
            progress = ByteProgress(f"download {pool}/{name}", chunk if isinstance(chunk, int) else None, quiet)
            return
        assert isinstance(chunk, bytes)
        fh.write(chunk)
        progress.add(len(chunk))

    try:
        total = from_context().download(pool_path(pool, "volumes", name, "data"), sink, {"snapshot": snapshot})
    finally:
        if out is None:
            fh.close()
    if file != "-":
        click.echo(f"downloaded {pool}/{name}{'@' + snapshot if snapshot else ''} to {file} ({human(total)})")
