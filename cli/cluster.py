"""`pvc cluster ...`: status, faults, maintenance mode, formation progress."""

from __future__ import annotations

import click

from pvc.cli.aliases import AliasGroup
from pvc.cli.client import from_context, path
from pvc.cli.keys import key
from pvc.cli.output import ago, counts, emit, fields, format_option, table


@click.group(cls=AliasGroup)
def cluster() -> None:
    """Cluster status, faults, maintenance mode, formation progress and API keys."""


cluster.add_command(key)


@cluster.command()
@format_option
def status(fmt: str) -> None:
    """Health, primary coordinator, maintenance mode, and node and VM counts."""
    data = from_context().get("/cluster")

    def render(s: dict) -> str:
        return fields(
            [
                ("cluster", s["name"]),
                ("health", s["health"]),
                ("primary", s["primary"]),
                ("maintenance", "on" if s["maintenance"] else "off"),
                ("nodes", counts(s["nodes"])),
                ("vms", counts(s["vms"])),
                ("faults", s["faults"]),
            ]
        )

    emit(data, fmt, render)


@cluster.group()
def fault() -> None:
    """Faults the cluster has raised: list, acknowledge, delete."""


@fault.command("list")
@click.argument("fault_ids", metavar="[ID]...", nargs=-1)
@format_option
def fault_list(fault_ids: tuple[str, ...], fmt: str) -> None:
    """Faults the cluster has raised, newest first (only the IDs given, if any)."""
    data = from_context().get("/cluster/faults")
    if fault_ids:
        data = [f for f in data if f["id"] in fault_ids]
    rows = [(f["id"], f["kind"], f["node"], f["count"], ago(f["last"]), f["acknowledged"], f["message"]) for f in data]
    emit(data, fmt, lambda _: table(["id", "kind", "node", "count", "last", "ack", "message"], rows))


@fault.command("ack")
@click.argument("fault_ids", metavar="ID...", nargs=-1, required=True)
def fault_ack(fault_ids: tuple[str, ...]) -> None:
    """Acknowledge the faults ID...: they stay listed, but no longer make the cluster degraded."""
    client = from_context()
    for fault_id in fault_ids:
        client.put(path("cluster", "faults", fault_id), {})
        click.echo(f"acknowledged fault {fault_id}")


@fault.command("delete")
@click.argument("fault_ids", metavar="ID...", nargs=-1, required=True)
def fault_delete(fault_ids: tuple[str, ...]) -> None:
    """Delete (clear) the faults ID... (each is raised again if its cause persists)."""
    client = from_context()
    for fault_id in fault_ids:
        data = client.delete(path("cluster", "faults", fault_id))
        click.echo(f"cleared fault {data['removed']}")


@cluster.command()
@click.argument("switch", type=click.Choice(["on", "off"]), required=False)
@format_option
def maintenance(switch: str | None, fmt: str) -> None:
    """Turn maintenance mode on or off; without an argument, show it. Maintenance pauses fencing."""
    client = from_context()
    if switch is None:
        data = client.get("/cluster/maintenance")
        emit(data, fmt, lambda d: f"maintenance: {'on' if d['enabled'] else 'off'}")
        return
    data = client.put("/cluster/maintenance", {"enabled": switch == "on"})
    click.echo(f"maintenance: {'on (fencing is paused)' if data['enabled'] else 'off'}")


@cluster.command()
@format_option
def formation(fmt: str) -> None:
    """Formation progress of every node: each step and its state."""
    data = from_context().get("/cluster/formation")
    rows = []
    for p in data:
        for step in p["steps"] or [{"name": "-", "state": "-", "updated": None, "message": ""}]:
            rows.append((p["node"], p["done"], step["name"], step["state"], ago(step["updated"]), step["message"]))

    def render(_: object) -> str:
        if not data:
            return "no formation progress recorded"
        return table(["node", "formed", "step", "state", "updated", "message"], rows)

    emit(data, fmt, render)
