"""`pvc node ...`: list and inspect nodes, flush and ready them, choose the primary, read the daemon's log."""

from __future__ import annotations

import re

import click

from pvc.cli.client import from_context, path
from pvc.cli.logs import follow_option, lines_option, show
from pvc.cli.names import name_regex, node_names
from pvc.cli.output import emit, fields, format_option, mib, table
from pvc.cli.wait import TASK_TIMEOUT, conclude, follow_primary, follow_task, timeout_option, wait_option

PRIMARY_TIMEOUT = 60.0
node_argument = click.argument("node", shell_complete=node_names)


def role(n: dict) -> str:
    return "primary" if n["primary"] else "coordinator" if n["coordinator"] else "hypervisor"


@click.group()
def node() -> None:
    """Nodes: their state and resources; flush, ready, primary, log."""


@node.command("list")
@click.argument("regex", metavar="[REGEX]", required=False, callback=name_regex)
@format_option
def list_nodes(regex: re.Pattern[str] | None, fmt: str) -> None:
    """Every node with its daemon and domain state, memory, vCPUs, load and VMs; with REGEX, only those whose name
    it matches (anywhere in the name: anchor it with ^ and $)."""
    data = from_context().get("/nodes")
    if regex is not None:
        data = [n for n in data if regex.search(n["name"])]
    rows = []
    for n in data:
        r = n["resources"] or {}
        rows.append(
            (
                n["name"],
                role(n),
                n["daemon_state"],
                n["domain_state"],
                f"{mib(r.get('mem_free'))}/{mib(r.get('mem_total'))}" if r else "-",
                f"{r.get('vcpus_allocated', 0)}/{r.get('cpus', 0)}" if r else "-",
                r.get("load") if r else None,
                len(r.get("running", [])) if r else None,
                f"{n['keepalive_age_s']:g}s" if n["keepalive_age_s"] is not None else None,
            )
        )
    headers = ["name", "role", "daemon", "domain", "mem free", "vcpus", "load", "vms", "keepalive"]
    emit(data, fmt, lambda _: table(headers, rows))


@node.command()
@node_argument
@format_option
def info(node: str, fmt: str) -> None:
    """One node in detail."""
    data = from_context().get(path("nodes", node))

    def render(n: dict) -> str:
        r = n["resources"] or {}
        fence = n["fence"]
        pairs: list[tuple[str, object]] = [
            ("name", n["name"]),
            ("role", role(n)),
            ("daemon state", n["daemon_state"]),
            ("domain state", n["domain_state"]),
            ("keepalive age", f"{n['keepalive_age_s']:g}s" if n["keepalive_age_s"] is not None else None),
            ("task", n["task"]),
        ]
        if r:
            pairs += [
                ("memory total", mib(r["mem_total"])),
                ("memory used", mib(r["mem_used"])),
                ("memory free", mib(r["mem_free"])),
                ("memory allocated", mib(r["mem_allocated"])),
                ("memory provisioned", mib(r["mem_provisioned"])),
                ("cpus", r["cpus"]),
                ("vcpus allocated", r["vcpus_allocated"]),
                ("load", r["load"]),
                ("libvirt", "ok" if r["libvirt_ok"] else "DOWN"),
                ("vm accelerator", (r.get("accelerator") or "").upper() or None),
                ("running vms", len(r["running"])),
            ]
        if fence:
            pairs.append(("last fence", f"{fence['state']}: {fence['message']}".rstrip(": ")))
        return fields(pairs)

    emit(data, fmt, render)


def _node_task(node: str, kind: str, wait: bool, timeout: float) -> None:
    client = from_context()
    task = client.post(path("nodes", node, kind), None)
    if wait:
        conclude(follow_task(client, task, timeout))
    else:
        click.echo(f"{kind} {node}: started task {task['id']} (follow it with `pvc task show {task['id']} --wait`)")


@node.command()
@node_argument
@wait_option
@timeout_option(TASK_TIMEOUT)
def flush(node: str, wait: bool, timeout: float) -> None:
    """Live-migrate every running VM off NODE, one at a time; it ends `flushed`."""
    _node_task(node, "flush", wait, timeout)


@node.command()
@node_argument
@wait_option
@timeout_option(TASK_TIMEOUT)
def ready(node: str, wait: bool, timeout: float) -> None:
    """Bring back the VMs flushed off NODE and start the ones marked to start; it ends `ready`."""
    _node_task(node, "ready", wait, timeout)


@node.command()
@node_argument
@wait_option
@timeout_option(PRIMARY_TIMEOUT)
def primary(node: str, wait: bool, timeout: float) -> None:
    """Make the coordinator NODE the primary (it takes the floating IPs and runs the fencer)."""
    client = from_context()
    view = client.post(path("nodes", node, "primary"), None)
    if view["primary"]:
        click.echo(f"node {node} is the primary")
    elif wait:
        follow_primary(client, node, timeout)
        click.echo(f"node {node} is the primary")
    else:
        click.echo(f"node {node} was asked to become the primary")


@node.command()
@node_argument
@lines_option
@follow_option
@format_option
def log(node: str, lines: int, follow: bool, fmt: str) -> None:
    """The last lines of NODE's daemon log; with --follow, then the new ones as they come."""
    show(from_context(), path("nodes", node, "log"), lines, follow, fmt)
