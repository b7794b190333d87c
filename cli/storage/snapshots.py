"""`pvc storage snapshot ...`: snapshots of a volume: list, create, roll back, protect, unprotect, remove."""

from __future__ import annotations

import click

from pvc.cli.client import from_context
from pvc.cli.output import emit, format_option, table
from pvc.cli.storage.pools import pool_path
from pvc.cli.storage.sizes import human


@click.group()
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
    emit(from_context().get(pool_path(pool, "volumes", volume, "snapshots")), fmt, snapshot_rows)


@snapshot.command("add")
@click.argument("pool")
@click.argument("volume")
@click.argument("name")
@format_option
def snapshot_add(pool: str, volume: str, name: str, fmt: str) -> None:
    """Snapshot POOL/VOLUME as NAME."""
    data = from_context().post(pool_path(pool, "volumes", volume, "snapshots"), {"name": name})
    emit(data, fmt, lambda s: f"created snapshot {s['pool']}/{s['volume']}@{s['name']}")


@snapshot.command("rollback")
@click.argument("pool")
@click.argument("volume")
@click.argument("name")
def snapshot_rollback(pool: str, volume: str, name: str) -> None:
    """Roll POOL/VOLUME back to snapshot NAME (refused while a running VM holds it)."""
    from_context().post(pool_path(pool, "volumes", volume, "snapshots", name, "rollback"), None)
    click.echo(f"rolled {pool}/{volume} back to @{name}")


def _protect(pool: str, volume: str, name: str, protected: bool, fmt: str) -> None:
    data = from_context().patch(pool_path(pool, "volumes", volume, "snapshots", name), {"protected": protected})
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
    from_context().delete(pool_path(pool, "volumes", volume, "snapshots", name))
    click.echo(f"removed snapshot {pool}/{volume}@{name}")
