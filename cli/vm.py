"""`pvc vm ...`: define, inspect, start and stop, migrate, tune and remove VMs; read their console."""

from __future__ import annotations

from typing import TextIO

import click
from click.core import ParameterSource

from pvc.cli.client import from_context, path
from pvc.cli.errors import Failure
from pvc.cli.names import node_names, vm_names
from pvc.cli.output import emit, fields, format_option, mib, printable, table
from pvc.cli.wait import TASK_TIMEOUT, VM_TIMEOUT, conclude, follow_task, follow_vm, timeout_option, wait_option
from pvc.config.choices import SELECTORS, VM_MIGRATION_METHODS
from pvc.nodeos.state.vmstate import Action

vm_argument = click.argument("vm", metavar="VM", shell_complete=vm_names)


def node_list(ctx: click.Context, param: click.Parameter, value: str | None) -> list[str] | None:
    """`n1,n2` → ["n1", "n2"]; an empty string → [] (no limit)."""
    if value is None:
        return None
    return [n.strip() for n in value.split(",") if n.strip()]


@click.group()
def vm() -> None:
    """Virtual machines: define, start and stop, migrate, tune, console, remove."""


@vm.command("list")
@click.option("--node", help="Only VMs whose home is this node.", shell_complete=node_names)
@click.option("--state", help="Only VMs in this desired state (start, stop, disable, ...).")
@click.option("--tag", help="Only VMs with this tag.")
@format_option
def list_vms(node: str | None, state: str | None, tag: str | None, fmt: str) -> None:
    """VMs with their desired and observed state, node, memory and vCPUs."""
    data = from_context().get("/vms", node=node, state=state, tag=tag)
    rows = [
        (v["name"], v["state"], v["running"], v["node"], v["last_node"], mib(v["memory_mib"]), v["vcpus"], v["tags"])
        for v in data
    ]
    headers = ["name", "state", "running", "node", "last node", "memory", "vcpus", "tags"]
    emit(data, fmt, lambda _: table(headers, rows))


@vm.command()
@click.argument("file", metavar="FILE.xml", type=click.File("r", encoding="utf-8"))
@click.option("--node", help="Home node (default: the one the selector picks).", shell_complete=node_names)
@click.option("--limit", callback=node_list, metavar="N1,N2", help="Nodes the VM may run on (default: any).")
@click.option("--selector", type=click.Choice(SELECTORS), help="How to pick a node (default: the cluster's).")
@click.option("--autostart", is_flag=True, help="Start it when its node becomes ready.")
@click.option("--method", type=click.Choice(VM_MIGRATION_METHODS), help="Migration method (default: the cluster's).")
@click.option("--max-downtime", type=click.IntRange(1, 60000), metavar="MS", help="Live migration downtime limit.")
@click.option("--tag", "tags", multiple=True, help="A tag (repeat for several).")
@format_option
def define(
    file: TextIO,
    node: str | None,
    limit: list[str] | None,
    selector: str | None,
    autostart: bool,
    method: str | None,
    max_downtime: int | None,
    tags: tuple[str, ...],
    fmt: str,
) -> None:
    """Define a VM from the libvirt domain XML in FILE.xml (- for standard input). It starts stopped."""
    try:
        xml = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise Failure(f"cannot read {file.name}: {getattr(exc, 'strerror', None) or exc}") from None
    body = {
        "xml": xml,
        "node": node,
        "node_limit": limit or [],
        "selector": selector,
        "autostart": autostart,
        "migration_method": method,
        "max_downtime_ms": max_downtime,
        "tags": list(tags),
    }
    data = from_context().post("/vms", body)
    emit(data, fmt, lambda v: f"defined VM '{v['name']}' ({v['uuid']}) on {v['node']}; it is {v['state']}")


@vm.command()
@vm_argument
@click.option("--xml", "xml_only", is_flag=True, help="Print only the domain XML.")
@format_option
def info(vm: str, xml_only: bool, fmt: str) -> None:
    """One VM in detail: states, node, resources, metadata."""
    data = from_context().get(path("vms", vm))
    if xml_only:
        click.echo(data["xml"])
        return

    def render(v: dict) -> str:
        m = v["meta"]
        return fields(
            [
                ("name", v["name"]),
                ("uuid", v["uuid"]),
                ("state", v["state"]),
                ("running", v["running"] + (f" on {v['running_on']}" if v["running_on"] else "")),
                ("reason", v["reason"] or None),
                ("node", v["node"]),
                ("last node", v["last_node"]),
                ("memory", mib(v["memory_mib"])),
                ("vcpus", v["vcpus"]),
                ("node limit", m["node_limit"]),
                ("selector", m["selector"] or "cluster default"),
                ("autostart", m["autostart"]),
                ("migration method", m["migration_method"] or "cluster default"),
                ("max downtime", f"{m['max_downtime_ms']} ms" if m["max_downtime_ms"] else "cluster default"),
                ("tags", v["tags"]),
            ]
        )

    emit(data, fmt, render)


def _change_state(vm: str, action: Action, wait: bool, timeout: float) -> None:
    client = from_context()
    data = client.post(path("vms", vm, "state"), {"action": action})
    if wait:
        follow_vm(client, data, action, timeout)
    else:
        click.echo(f"{action} {data['name']}: requested; it wants {data['state']}, is {data['running']}")


def _state_command(action: Action, doc: str) -> None:
    @vm.command(action, help=doc)
    @vm_argument
    @wait_option
    @timeout_option(VM_TIMEOUT)
    def command(vm: str, wait: bool, timeout: float) -> None:
        _change_state(vm, action, wait, timeout)


_state_command("start", "Start VM on its home node.")
_state_command("shutdown", "Shut VM down through ACPI (destroyed after the cluster's shutdown timeout).")
_state_command("stop", "Stop VM at once (destroy it).")
_state_command("restart", "Restart VM: an ACPI shutdown, then start.")
_state_command("disable", "Disable a stopped VM: it stays off and out of health checks.")


def _move(vm: str, action: str, target: str | None, wait: bool, timeout: float) -> None:
    client = from_context()
    task = client.post(path("vms", vm, "migrate"), {"action": action, "target": target})
    if task["state"] in ("succeeded", "failed"):  # a VM that is not running only changes its home node
        conclude(task)
    elif wait:
        conclude(follow_task(client, task, timeout))
    else:
        click.echo(
            f"{action} {task['target']}: {task['message']}: started task {task['id']} "
            f"(follow it with `pvc task show {task['id']} --wait`)"
        )


target_option = click.option(
    "--target", help="Node to move to (default: the one the selector picks).", shell_complete=node_names
)


@vm.command()
@vm_argument
@target_option
@wait_option
@timeout_option(TASK_TIMEOUT)
def migrate(vm: str, target: str | None, wait: bool, timeout: float) -> None:
    """Migrate VM to another node for now (live if it runs); `unmigrate` brings it back."""
    _move(vm, "migrate", target, wait, timeout)


@vm.command()
@vm_argument
@target_option
@wait_option
@timeout_option(TASK_TIMEOUT)
def move(vm: str, target: str | None, wait: bool, timeout: float) -> None:
    """Move VM to another node for good (live if it runs)."""
    _move(vm, "move", target, wait, timeout)


@vm.command()
@vm_argument
@wait_option
@timeout_option(TASK_TIMEOUT)
def unmigrate(vm: str, wait: bool, timeout: float) -> None:
    """Return a migrated VM to the node it came from."""
    _move(vm, "unmigrate", None, wait, timeout)


class DowntimeType(click.ParamType):
    name = "MS|default"

    def convert(self, value: object, param: click.Parameter | None, ctx: click.Context | None) -> object:
        if value in ("default", None) or isinstance(value, int):
            return None if value == "default" else value
        try:
            ms = int(str(value))
        except ValueError:
            self.fail(f"'{value}' is neither a number of milliseconds nor 'default'", param, ctx)
        if not 1 <= ms <= 60000:
            self.fail(f"{ms} is not between 1 and 60000", param, ctx)
        return ms


@vm.command()
@vm_argument
@click.option("--limit", callback=node_list, metavar="N1,N2", help="Nodes it may run on ('' for any).")
@click.option("--selector", type=click.Choice([*SELECTORS, "default"]), help="Node selector, or the cluster's.")
@click.option("--autostart/--no-autostart", default=None, help="Start it when its node becomes ready.")
@click.option(
    "--method", type=click.Choice([*VM_MIGRATION_METHODS, "default"]), help="Migration method, or the cluster's."
)
@click.option(
    "--max-downtime",
    type=DowntimeType(),
    metavar="MS|default",
    help="Live migration downtime limit (ms), or the cluster's.",
)
@click.option("--tag", "tags", multiple=True, help="Replace the tags with these (repeat for several).")
@click.option("--no-tags", is_flag=True, help="Remove every tag.")
@format_option
def meta(
    vm: str,
    limit: list[str] | None,
    selector: str | None,
    autostart: bool | None,
    method: str | None,
    max_downtime: object,
    tags: tuple[str, ...],
    no_tags: bool,
    fmt: str,
) -> None:
    """Show VM's metadata, or change it with the options given (others stay as they are)."""
    changes: dict[str, object] = {}
    if limit is not None:
        changes["node_limit"] = limit
    if selector is not None:
        changes["selector"] = None if selector == "default" else selector
    if autostart is not None:
        changes["autostart"] = autostart
    if method is not None:
        changes["migration_method"] = None if method == "default" else method
    if max_downtime is not None or _given("max_downtime"):
        changes["max_downtime_ms"] = max_downtime
    if tags and no_tags:
        raise click.UsageError("--tag and --no-tags contradict each other")
    if tags or no_tags:
        changes["tags"] = list(tags)
    client = from_context()
    data = client.patch(path("vms", vm, "meta"), changes) if changes else client.get(path("vms", vm))

    def render(v: dict) -> str:
        m = v["meta"]
        return fields(
            [
                ("vm", v["name"]),
                ("node limit", m["node_limit"] or "any"),
                ("selector", m["selector"] or "cluster default"),
                ("autostart", m["autostart"]),
                ("migration method", m["migration_method"] or "cluster default"),
                ("max downtime", f"{m['max_downtime_ms']} ms" if m["max_downtime_ms"] else "cluster default"),
                ("tags", m["tags"]),
            ]
        )

    emit(data["meta"] if fmt != "table" else data, fmt, render)


def _given(name: str) -> bool:
    return click.get_current_context().get_parameter_source(name) == ParameterSource.COMMANDLINE


@vm.command()
@vm_argument
@click.option("--lines", "-n", type=click.IntRange(1, 10000), default=100, show_default=True)
@format_option
def console(vm: str, lines: int, fmt: str) -> None:
    """The last lines of VM's serial console."""
    data = from_context().get(path("vms", vm, "console"), lines=lines)
    emit(data, fmt, lambda d: printable(d["lines"]))


@vm.command()
@vm_argument
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def remove(vm: str, yes: bool) -> None:
    """Remove a stopped or disabled VM from the cluster."""
    if not yes:
        click.confirm(f"Remove VM '{vm}'?", abort=True, err=True)
    data = from_context().delete(path("vms", vm))
    click.echo(f"removed VM '{data['removed']}'")
