"""`pvc task ...`: long operations (flush, ready, migrations) and their progress."""

from __future__ import annotations

import click

from pvc.cli.client import from_context, path
from pvc.cli.errors import Failure
from pvc.cli.output import ago, emit, fields, format_option, table
from pvc.cli.wait import TASK_TIMEOUT, conclude, follow_task, timeout_option, wait_option


@click.group()
def task() -> None:
    """Long operations (flush, ready, migrate, move, unmigrate) and their progress."""


def progress(t: dict) -> str:
    return f"{t['progress']}/{t['total']}" if t["total"] else "-"


@task.command("list")
@format_option
def list_tasks(fmt: str) -> None:
    """Tasks, newest first."""
    data = from_context().get("/tasks")
    rows = [(t["id"], t["kind"], t["target"], t["state"], progress(t), ago(t["created"]), t["message"]) for t in data]
    emit(data, fmt, lambda _: table(["id", "kind", "target", "state", "progress", "age", "message"], rows))


@task.command()
@click.argument("task_id", metavar="ID")
@wait_option
@timeout_option(TASK_TIMEOUT)
@format_option
def show(task_id: str, wait: bool, timeout: float, fmt: str) -> None:
    """One task; with --wait, follow it until it ends."""
    client = from_context()
    data = client.get(path("tasks", task_id))
    if wait:
        data = follow_task(client, data, timeout)
        if fmt == "table":
            conclude(data)
            return

    def render(t: dict) -> str:
        return fields(
            [
                ("id", t["id"]),
                ("kind", t["kind"]),
                ("target", t["target"]),
                ("state", t["state"]),
                ("progress", progress(t)),
                ("message", t["message"]),
                ("created", ago(t["created"]) + " ago"),
                ("updated", ago(t["updated"]) + " ago"),
            ]
        )

    emit(data, fmt, render)
    if wait and data["state"] == "failed":
        raise Failure(f"task {data['id']} ({data['kind']} {data['target']}) failed: {data['message']}")
