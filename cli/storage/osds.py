"""`pvc storage osd ...`: OSDs: list, add (on a node, by disk selector), in, out, remove."""

from __future__ import annotations

import click

from pvc.cli.client import from_context, path
from pvc.cli.output import emit, format_option, table
from pvc.cli.storage.sizes import human
from pvc.cli.wait import TASK_TIMEOUT, conclude, follow_task, timeout_option, wait_option


@click.group()
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
    emit(from_context().get("/storage/osds"), fmt, osd_rows)


@osd.command("info")
@click.argument("osd_id", metavar="ID")
@format_option
def osd_info(osd_id: str, fmt: str) -> None:
    """One OSD (ID: N or osd.N)."""
    emit(from_context().get(path("storage", "osds", osd_id)), fmt, lambda o: osd_rows([o]))


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
    c = from_context()
    data = c.post("/storage/osds", {"node": node, "path": dev_path, "model": model, "serial": serial})
    if wait:
        data = follow_task(c, data, timeout)
        if fmt == "table":
            conclude(data)
            click.echo(data["message"])
            return
    emit(data, fmt, lambda t: f"requested: {t['message']} (task {t['id']})")


def _set_in(osd_id: str, action: str, fmt: str) -> None:
    data = from_context().post(path("storage", "osds", osd_id, "state"), {"action": action})
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
    from_context().request("DELETE", path("storage", "osds", osd_id), query={"force": "true" if force else None})
    click.echo(f"removed {osd_id if osd_id.startswith('osd.') else 'osd.' + osd_id}")
