"""`pvc cluster ...`: status, faults, maintenance mode, formation progress."""

from __future__ import annotations

import click

from pvc.cli.client import from_context, path
from pvc.cli.keys import key
from pvc.cli.output import ago, counts, emit, fields, format_option, table


@click.group()
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


@cluster.command()
@format_option
def faults(fmt: str) -> None:
    """Faults the cluster has raised, newest first."""
    data = from_context().get("/cluster/faults")
    rows = [(f["id"], f["kind"], f["node"], f["count"], ago(f["last"]), f["acknowledged"], f["message"]) for f in data]
    emit(data, fmt, lambda _: table(["id", "kind", "node", "count", "last", "ack", "message"], rows))


@cluster.command("fault-clear")
@click.argument("fault_id", metavar="ID")
def fault_clear(fault_id: str) -> None:
    """Clear the fault ID (it is raised again if its cause persists)."""
    data = from_context().delete(path("cluster", "faults", fault_id))
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
