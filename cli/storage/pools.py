"""`pvc storage pool ...`: list, create, change and remove pools."""

from __future__ import annotations

import click

from pvc.cli.client import from_context, path
from pvc.cli.output import emit, format_option, table
from pvc.cli.storage.sizes import human, size_value
from pvc.config import pools


def pool_path(pool: str, *rest: str) -> str:
    """The API path of a pool, or of something in it (`pool_path("vms", "volumes", "disk0")`)."""
    return path("storage", "pools", pool, *rest)


@click.group()
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
    emit(from_context().get("/storage/pools"), fmt, pool_rows)


@pool.command("info")
@click.argument("name")
@format_option
def pool_info(name: str, fmt: str) -> None:
    """One pool."""
    emit(from_context().get(pool_path(name)), fmt, lambda p: pool_rows([p]))


@pool.command("add")
@click.argument("name")
@click.option(
    "--pgs", type=int, default=pools.DEFAULT_PGS, show_default=True, help="Placement groups (a power of two)."
)
@click.option("--size", type=int, default=pools.DEFAULT_SIZE, show_default=True, help="Copies of each object.")
@click.option(
    "--min-size", type=int, default=pools.DEFAULT_MIN_SIZE, show_default=True, help="Copies needed to accept writes."
)
@format_option
def pool_add(name: str, pgs: int, size: int, min_size: int, fmt: str) -> None:
    """Create an RBD pool."""
    data = from_context().post("/storage/pools", {"name": name, "pgs": pgs, "size": size, "min_size": min_size})
    emit(
        data, fmt, lambda p: f"created pool '{p['name']}' (size {p['size']}, min size {p['min_size']}, {p['pgs']} pgs)"
    )


@pool.command("set")
@click.argument("name")
@click.option("--size", type=int, help="Copies of each object.")
@click.option("--min-size", type=int, help="Copies needed to accept writes (default with --size: size - 1).")
@click.option("--quota", callback=size_value, help="Cap the pool at this size (0: no cap), e.g. 500G.")
@format_option
def pool_set(name: str, size: int | None, min_size: int | None, quota: int | None, fmt: str) -> None:
    """Change a pool's copies, min size or quota."""
    body = {k: v for k, v in (("size", size), ("min_size", min_size), ("quota_bytes", quota)) if v is not None}
    if not body:
        raise click.UsageError("give --size, --min-size or --quota")
    data = from_context().patch(pool_path(name), body)
    emit(data, fmt, lambda p: f"pool '{p['name']}': size {p['size']}, min size {p['min_size']}")


@pool.command("remove")
@click.argument("name")
@click.option("--confirm", metavar="NAME", help="The pool's name again: removing a pool destroys its volumes.")
def pool_remove(name: str, confirm: str | None) -> None:
    """Remove a pool and every volume in it (needs --confirm NAME)."""
    from_context().request("DELETE", pool_path(name), query={"confirm": confirm})
    click.echo(f"removed pool '{name}'")
