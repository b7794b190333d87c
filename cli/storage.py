"""`pvc storage ...`: Ceph status, pools, volumes (with upload and download), snapshots and OSDs."""

from __future__ import annotations

import os
import re
import sys
from typing import Any, BinaryIO

import click

from pvc.cli.output import ago, emit, fields, format_option, table
from pvc.cli.wait import TASK_TIMEOUT, timeout_option, wait_option

UNITS = {"": 1, "B": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}


def parse_size(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> int | None:
    """`10G`, `512M`, `4096` (bytes) → bytes (binary units; a trailing `iB` or `B` is allowed)."""
    if value is None:
        return None
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", value, re.IGNORECASE)
    if not m:
        raise click.BadParameter(f"'{value}' is not a size (e.g. 4096, 512M, 10G)")
    return int(float(m.group(1)) * UNITS[m.group(2).upper()])


def human(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024  # type: ignore[assignment]
    return str(n)


def client() -> Any:
    from pvc.cli.client import from_context

    return from_context()


def vpath(pool: str, *rest: str) -> str:
    from pvc.cli.client import path

    return path("storage", "pools", pool, *rest)


@click.group()
def storage() -> None:
    """Ceph storage: cluster status, pools, volumes (RBD images), snapshots and OSDs."""


@storage.command()
@format_option
def status(fmt: str) -> None:
    """Ceph health and usage (as the primary coordinator last measured it)."""
    data = client().get("/storage")

    def render(s: dict) -> str:
        checks = "; ".join(f"{k}: {v}" for k, v in s["checks"].items())
        pgs = ", ".join(f"{n} {state}" for state, n in sorted(s["pg_states"].items()))
        return fields(
            [
                ("health", s["health"] + (f" ({checks})" if checks else "")),
                ("used", f"{human(s['used_bytes'])} of {human(s['total_bytes'])} ({s['used_percent']:g}%)"),
                ("osds", f"{s['osds']} ({s['osds_up']} up, {s['osds_in']} in)"),
                ("pgs", f"{s['pgs']}" + (f" ({pgs})" if pgs else "")),
                ("pools", len(s["pools"])),
                ("measured", f"{ago(s['updated'])} ago by {s['by'] or '-'}"),
            ]
        )

    emit(data, fmt, render)


# -- pools --------------------------------------------------------------------------------------------------------
@storage.group()
def pool() -> None:
    """Pools: list, create, change size, remove."""


def pool_rows(data: list[dict]) -> str:
    rows = [
        (
            p["name"],
            p["size"],
            p["min_size"],
            p["pgs"],
            human(p["stored_bytes"]),
            human(p["capacity_bytes"]),
            f"{p['used_percent']:g}%",
            p["objects"],
        )
        for p in data
    ]
    return table(["name", "size", "min size", "pgs", "stored", "capacity", "used", "objects"], rows)


@pool.command("list")
@format_option
def pool_list(fmt: str) -> None:
    """Pools with their copies, placement groups and use."""
    emit(client().get("/storage/pools"), fmt, pool_rows)


@pool.command("info")
@click.argument("name")
@format_option
def pool_info(name: str, fmt: str) -> None:
    """One pool."""
    emit(client().get(vpath(name)), fmt, lambda p: pool_rows([p]))


@pool.command("add")
@click.argument("name")
@click.option("--pgs", type=int, default=32, show_default=True, help="Placement groups (a power of two).")
@click.option("--size", type=int, default=3, show_default=True, help="Copies of each object.")
@click.option("--min-size", type=int, default=2, show_default=True, help="Copies needed to accept writes.")
@format_option
def pool_add(name: str, pgs: int, size: int, min_size: int, fmt: str) -> None:
    """Create an RBD pool."""
    data = client().post("/storage/pools", {"name": name, "pgs": pgs, "size": size, "min_size": min_size})
    emit(
        data, fmt, lambda p: f"created pool '{p['name']}' (size {p['size']}, min size {p['min_size']}, {p['pgs']} pgs)"
    )


@pool.command("set")
@click.argument("name")
@click.option("--size", type=int, help="Copies of each object.")
@click.option("--min-size", type=int, help="Copies needed to accept writes (default with --size: size - 1).")
@click.option("--quota", callback=parse_size, help="Cap the pool at this size (0: no cap), e.g. 500G.")
@format_option
def pool_set(name: str, size: int | None, min_size: int | None, quota: int | None, fmt: str) -> None:
    """Change a pool's copies, min size or quota."""
    body = {k: v for k, v in (("size", size), ("min_size", min_size), ("quota_bytes", quota)) if v is not None}
    if not body:
        raise click.UsageError("give --size, --min-size or --quota")
    data = client().patch(vpath(name), body)
    emit(data, fmt, lambda p: f"pool '{p['name']}': size {p['size']}, min size {p['min_size']}")


@pool.command("remove")
@click.argument("name")
@click.option("--confirm", metavar="NAME", help="The pool's name again: removing a pool destroys its volumes.")
def pool_remove(name: str, confirm: str | None) -> None:
    """Remove a pool and every volume in it (needs --confirm NAME)."""
    from pvc.cli.client import path

    client().request("DELETE", path("storage", "pools", name), query={"confirm": confirm})
    click.echo(f"removed pool '{name}'")


# -- volumes ------------------------------------------------------------------------------------------------------
@storage.group()
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
    emit(client().get(vpath(pool, "volumes")), fmt, volume_rows)


@volume.command("info")
@click.argument("pool")
@click.argument("name")
@format_option
def volume_info(pool: str, name: str, fmt: str) -> None:
    """One volume."""
    emit(client().get(vpath(pool, "volumes", name)), fmt, lambda v: volume_rows([v]))


force_option = click.option("--force", is_flag=True, help="Even when the pool is over 80 % full.")


@volume.command("add")
@click.argument("pool")
@click.argument("name")
@click.argument("size", callback=parse_size)
@force_option
@format_option
def volume_add(pool: str, name: str, size: int, force: bool, fmt: str) -> None:
    """Create volume NAME of SIZE (e.g. 20G) in POOL."""
    data = client().post(vpath(pool, "volumes"), {"name": name, "size": size, "force": force})
    emit(data, fmt, lambda v: f"created volume {v['pool']}/{v['name']} ({human(v['size'])})")


@volume.command("resize")
@click.argument("pool")
@click.argument("name")
@click.argument("size", callback=parse_size)
@force_option
@format_option
def volume_resize(pool: str, name: str, size: int, force: bool, fmt: str) -> None:
    """Grow volume NAME to SIZE (shrinking is refused)."""
    data = client().patch(vpath(pool, "volumes", name), {"size": size, "force": force})
    emit(data, fmt, lambda v: f"volume {v['pool']}/{v['name']} is now {human(v['size'])}")


@volume.command("rename")
@click.argument("pool")
@click.argument("name")
@click.argument("new_name")
@format_option
def volume_rename(pool: str, name: str, new_name: str, fmt: str) -> None:
    """Rename volume NAME to NEW_NAME."""
    data = client().patch(vpath(pool, "volumes", name), {"name": new_name})
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
    data = client().post(
        vpath(pool, "volumes", name, "clone"), {"snapshot": snapshot, "name": new_name, "force": force}
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
    data = client().post(vpath(pool, "volumes", name, "copy"), {"name": new_name, "pool": to_pool, "force": force})
    emit(data, fmt, lambda v: f"copied {pool}/{name} to {v['pool']}/{v['name']}")


@volume.command("remove")
@click.argument("pool")
@click.argument("name")
def volume_remove(pool: str, name: str) -> None:
    """Remove volume NAME and its snapshots (refused while a running VM holds it)."""
    client().delete(vpath(pool, "volumes", name))
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


@volume.command("upload")
@click.argument("pool")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option(
    "--image-format", "image_format", type=click.Choice(["raw", "qcow2"]), help="Default: from the file's contents."
)
@click.option("--quiet", is_flag=True, help="No progress on standard error.")
@force_option
@format_option
def volume_upload(
    pool: str, name: str, file: str, image_format: str | None, quiet: bool, force: bool, fmt: str
) -> None:
    """Create volume NAME in POOL from FILE, a raw or qcow2 disk image (progress on standard error)."""
    from pvc.cli.client import ApiError
    from pvc.cli.errors import Failure

    size = os.path.getsize(file)
    c = client()
    try:  # refuse before sending the whole file
        c.get(vpath(pool, "volumes", name))
        raise Failure(f"volume {pool}/{name} already exists")
    except ApiError as exc:
        if exc.status != 404 or "no pool" in str(exc):
            raise
    with open(file, "rb") as fh:
        if image_format is None:
            image_format = "qcow2" if fh.read(4) == b"QFI\xfb" else "raw"
            fh.seek(0)
        progress = ByteProgress(f"upload {os.path.basename(file)}", size, quiet)
        data = c.upload(
            vpath(pool, "volumes", name, "data"),
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
    from pvc.cli.errors import Failure

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
        total = client().download(vpath(pool, "volumes", name, "data"), sink, {"snapshot": snapshot})
    finally:
        if out is None:
            fh.close()
    if file != "-":
        click.echo(f"downloaded {pool}/{name}{'@' + snapshot if snapshot else ''} to {file} ({human(total)})")


# -- snapshots ----------------------------------------------------------------------------------------------------
@storage.group()
def snapshot() -> None:
    """Snapshots of a volume: list, create, roll back, protect, unprotect, remove."""


def snapshot_rows(data: list[dict]) -> str:
    rows = [(s["pool"], s["volume"], s["name"], human(s["size"]), s["protected"]) for s in data]
    return table(["pool", "volume", "name", "size", "protected"], rows)


@snapshot.command("list")
@click.argument("pool")
@click.argument("volume")
@format_option
def snapshot_list(pool: str, volume: str, fmt: str) -> None:
    """Snapshots of POOL/VOLUME."""
    emit(client().get(vpath(pool, "volumes", volume, "snapshots")), fmt, snapshot_rows)


@snapshot.command("add")
@click.argument("pool")
@click.argument("volume")
@click.argument("name")
@format_option
def snapshot_add(pool: str, volume: str, name: str, fmt: str) -> None:
    """Snapshot POOL/VOLUME as NAME."""
    data = client().post(vpath(pool, "volumes", volume, "snapshots"), {"name": name})
    emit(data, fmt, lambda s: f"created snapshot {s['pool']}/{s['volume']}@{s['name']}")


@snapshot.command("rollback")
@click.argument("pool")
@click.argument("volume")
@click.argument("name")
def snapshot_rollback(pool: str, volume: str, name: str) -> None:
    """Roll POOL/VOLUME back to snapshot NAME (refused while a running VM holds it)."""
    client().post(vpath(pool, "volumes", volume, "snapshots", name, "rollback"), None)
    click.echo(f"rolled {pool}/{volume} back to @{name}")


def _protect(pool: str, volume: str, name: str, protected: bool, fmt: str) -> None:
    data = client().patch(vpath(pool, "volumes", volume, "snapshots", name), {"protected": protected})
    emit(data, fmt, lambda s: f"snapshot {pool}/{volume}@{name} is {'' if s['protected'] else 'not '}protected")


@snapshot.command("protect")
@click.argument("pool")
@click.argument("volume")
@click.argument("name")
@format_option
def snapshot_protect(pool: str, volume: str, name: str, fmt: str) -> None:
    """Protect snapshot NAME (it cannot be removed; clones need it)."""
    _protect(pool, volume, name, True, fmt)


@snapshot.command("unprotect")
@click.argument("pool")
@click.argument("volume")
@click.argument("name")
@format_option
def snapshot_unprotect(pool: str, volume: str, name: str, fmt: str) -> None:
    """Unprotect snapshot NAME (refused while clones depend on it)."""
    _protect(pool, volume, name, False, fmt)


@snapshot.command("remove")
@click.argument("pool")
@click.argument("volume")
@click.argument("name")
def snapshot_remove(pool: str, volume: str, name: str) -> None:
    """Remove snapshot NAME (refused while it is protected)."""
    client().delete(vpath(pool, "volumes", volume, "snapshots", name))
    click.echo(f"removed snapshot {pool}/{volume}@{name}")


# -- OSDs ---------------------------------------------------------------------------------------------------------
@storage.group()
def osd() -> None:
    """OSDs: list, add (on a node, by disk selector), in, out, remove."""


def osd_rows(data: list[dict]) -> str:
    rows = [
        (
            f"osd.{o['id']}",
            o["node"],
            o["device"],
            "up" if o["up"] else "down",
            "in" if o["inside"] else "out",
            human(o["size_bytes"]),
            f"{o['used_percent']:g}%",
            o["pgs"],
        )
        for o in data
    ]
    return table(["osd", "node", "device", "up", "in", "size", "used", "pgs"], rows)


@osd.command("list")
@format_option
def osd_list(fmt: str) -> None:
    """OSDs with node, device, size, use and up/in state."""
    emit(client().get("/storage/osds"), fmt, osd_rows)


@osd.command("info")
@click.argument("osd_id", metavar="ID")
@format_option
def osd_info(osd_id: str, fmt: str) -> None:
    """One OSD (ID: N or osd.N)."""
    from pvc.cli.client import path

    emit(client().get(path("storage", "osds", osd_id)), fmt, lambda o: osd_rows([o]))


@osd.command("add")
@click.argument("node")
@click.option("--path", "dev_path", help="Device path glob, e.g. /dev/disk/by-id/nvme-*.")
@click.option("--model", help="Disk model glob.")
@click.option("--serial", help="Disk serial glob.")
@wait_option
@timeout_option(TASK_TIMEOUT)
@format_option
def osd_add(
    node: str, dev_path: str | None, model: str | None, serial: str | None, wait: bool, timeout: float, fmt: str
) -> None:
    """Ask NODE to make OSDs of its blank disks matching the selector (the node formats them)."""
    from pvc.cli.wait import conclude, follow_task

    c = client()
    data = c.post("/storage/osds", {"node": node, "path": dev_path, "model": model, "serial": serial})
    if wait:
        data = follow_task(c, data, timeout)
        if fmt == "table":
            conclude(data)
            click.echo(data["message"])
            return
    emit(data, fmt, lambda t: f"requested: {t['message']} (task {t['id']})")


def _set_in(osd_id: str, action: str, fmt: str) -> None:
    from pvc.cli.client import path

    data = client().post(path("storage", "osds", osd_id, "state"), {"action": action})
    emit(data, fmt, lambda o: f"osd.{o['id']} is {'in' if o['inside'] else 'out'}")


@osd.command("in")
@click.argument("osd_id", metavar="ID")
@format_option
def osd_in(osd_id: str, fmt: str) -> None:
    """Mark an OSD in: it takes data again."""
    _set_in(osd_id, "in", fmt)


@osd.command("out")
@click.argument("osd_id", metavar="ID")
@format_option
def osd_out(osd_id: str, fmt: str) -> None:
    """Mark an OSD out: its data moves to the others."""
    _set_in(osd_id, "out", fmt)


@osd.command("remove")
@click.argument("osd_id", metavar="ID")
@click.option("--force", is_flag=True, help="Even when Ceph or the min_size check says it is unsafe.")
def osd_remove(osd_id: str, force: bool) -> None:
    """Remove an OSD whose daemon is stopped (refused while unsafe, unless --force)."""
    from pvc.cli.client import path

    client().request("DELETE", path("storage", "osds", osd_id), query={"force": "true" if force else None})
    click.echo(f"removed {osd_id if osd_id.startswith('osd.') else 'osd.' + osd_id}")
