"""`pvc vm ...`: define, inspect, start and stop, migrate, change and remove VMs; read their console."""

from __future__ import annotations

import re
from typing import Any, TextIO

import click
from click.core import ParameterSource

from pvc.cli import vmchange, vmcreate, vmdefine, vmedit
from pvc.cli.aliases import AliasGroup
from pvc.cli.client import from_context, path
from pvc.cli.errors import Failure
from pvc.cli.logs import follow_option, lines_option, show
from pvc.cli.names import name_regex, node_names, vm_names
from pvc.cli.output import emit, fields, format_option, mib, table
from pvc.cli.vmdefine import node_list
from pvc.cli.vmnetwork import network as network_group
from pvc.cli.vmvolume import volume as volume_group
from pvc.cli.wait import TASK_TIMEOUT, VM_TIMEOUT, conclude, follow_task, follow_vm, timeout_option, wait_option
from pvc.config.choices import BOOT_DEVICES, FIRMWARES, GRAPHICS, MACHINES, SELECTORS, VM_MIGRATION_METHODS
from pvc.nodeos.state.vmstate import Action

vm_argument = click.argument("vm", metavar="VM", shell_complete=vm_names)
file_option = click.option(
    "--file",
    "-f",
    "file",
    type=click.File("r", encoding="utf-8"),
    help="A definition as JSON or YAML, or a libvirt domain XML (- for standard input).",
)
DEFINITION_OPTIONS = (
    "name", "description", "vcpus", "memory", "machine", "firmware", "boot", "cpu_model", "disks", "nics",
    "graphics", "tags", "limit", "selector", "autostart", "method", "max_downtime",
)  # fmt: skip


@click.group(cls=AliasGroup)
def vm() -> None:
    """Virtual machines: define, start and stop, migrate, tune, networks, volumes, console, remove."""


for _command in (network_group, volume_group, vmchange.rename, vmchange.vcpu, vmchange.memory, vmchange.tag):
    vm.add_command(_command)


@vm.command("list")
@click.argument("regex", metavar="[REGEX]", required=False, callback=name_regex)
@click.option("--node", help="Only VMs whose home is this node.", shell_complete=node_names)
@click.option("--state", help="Only VMs in this desired state (start, stop, disable, ...).")
@click.option("--tag", help="Only VMs with this tag.")
@format_option
def list_vms(regex: re.Pattern[str] | None, node: str | None, state: str | None, tag: str | None, fmt: str) -> None:
    """VMs with their desired and observed state, node, memory and vCPUs; with REGEX, only those whose name it
    matches (anywhere in the name: anchor it with ^ and $)."""
    data = from_context().get("/vms", node=node, state=state, tag=tag)
    if regex is not None:
        data = [v for v in data if regex.search(v["name"])]
    rows = [
        (v["name"], v["state"], v["running"], v["node"], v["last_node"], mib(v["memory_mib"]), v["vcpus"], v["tags"])
        for v in data
    ]
    headers = ["name", "state", "running", "node", "last node", "memory", "vcpus", "tags"]
    emit(data, fmt, lambda _: table(headers, rows))


@vm.command()
@file_option
@click.option("--name", help="The VM's name.")
@click.option("--description", help="Free text about the VM.")
@click.option("--vcpus", type=int, help="vCPUs (default 1).")
@click.option("--memory", type=vmdefine.memory_mib, metavar="SIZE", help="Memory: MiB, or like 2G or 512M.")
@click.option("--machine", type=click.Choice(MACHINES), help="Machine type (default q35).")
@click.option("--firmware", type=click.Choice(FIRMWARES), help="Firmware (default bios).")
@click.option("--boot", multiple=True, type=click.Choice(BOOT_DEVICES), help="Boot order (repeat).")
@click.option("--cpu-model", help="A QEMU CPU model (default: the node's: host-passthrough under KVM).")
@click.option(
    "--disk",
    "disks",
    multiple=True,
    metavar="POOL/VOL[,OPT=V]",
    help="An RBD volume (repeat); options device=disk|cdrom, bus=virtio|scsi|sata, cache=..., discard=..., "
    "size=20G, ro.",
)
@click.option(
    "--nic", "nics", multiple=True, metavar="VNI[,OPT=V]", help="A NIC on network VNI (repeat); mac=..., model=..."
)
@click.option("--graphics", type=click.Choice(GRAPHICS), help="A console on 127.0.0.1 (default none).")
@click.option("--tag", "tags", multiple=True, help="A tag (repeat for several).")
@click.option(
    "--node-limit", "--limit", "limit", callback=node_list, metavar="N1,N2", help="Nodes it may run on (default any)."
)
@click.option("--selector", type=click.Choice(SELECTORS), help="How to pick a node (default: the cluster's).")
@click.option("--autostart", is_flag=True, default=None, help="Start it when its node becomes ready.")
@click.option("--method", type=click.Choice(VM_MIGRATION_METHODS), help="Migration method (default: the cluster's).")
@click.option("--max-downtime", type=click.IntRange(1, 60000), metavar="MS", help="Live migration downtime limit.")
@click.option("--node", help="Home node (default: the one the selector picks).", shell_complete=node_names)
@format_option
def define(file: TextIO | None, node: str | None, fmt: str, **options: Any) -> None:
    """Define a VM (it starts stopped): from options (--name and --memory at least), or from --file holding a
    definition as JSON or YAML, or a libvirt domain XML (imported through PVC's allowlist)."""
    body = _body(file, options)
    body["node"] = node
    data = from_context().post("/vms", body)
    emit(data, fmt, lambda v: f"defined VM '{v['name']}' ({v['uuid']}) on {v['node']}; it is {v['state']}")


@vm.command()
@vm_argument
@file_option
@format_option
def modify(vm: str, file: TextIO | None, fmt: str) -> None:
    """Replace VM's definition: without --file, edit it as YAML in $EDITOR (saved unchanged: nothing happens; a
    refused one re-opens with the reason); with --file, the one there (JSON, YAML, or a domain XML such as `pvc vm
    dump` prints). NICs and disks added or removed are plugged in or out of a running VM; other changes apply at
    its next start. The name and UUID stay (`pvc vm rename` renames)."""
    client = from_context()
    data = vmedit.edit(client, vm) if file is None else client.put(path("vms", vm), _body(file, {}))
    if data is None:
        click.echo(f"VM '{vm}' not changed")
        return
    emit(data, fmt, lambda v: f"modified VM '{v['name']}'; {vmedit.when(v)}")


def _body(file: TextIO | None, options: dict[str, Any]) -> dict[str, Any]:
    given = [f"--{k.replace('_', '-')}" for k in DEFINITION_OPTIONS if options.get(k) not in (None, (), [], False)]
    if file is not None:
        if given:
            raise click.UsageError(f"give either --file or definition options, not both ({', '.join(given)})")
        return vmdefine.from_file(file.name, vmdefine.read(file))
    return {"definition": vmdefine.from_options(options)}


@vm.command()
@vm_argument
@click.option("--xml", "xml_only", is_flag=True, help="Print only the domain XML rendered from its definition.")
@format_option
def info(vm: str, xml_only: bool, fmt: str) -> None:
    """One VM in detail: states, node, its definition, and why it cannot start if it has none."""
    data = from_context().get(path("vms", vm))
    if xml_only:
        _echo_xml(data)
        return
    emit(data, fmt, _describe)


@vm.command()
@vm_argument
@click.option("--file", "-f", "file", type=click.File("w", encoding="utf-8"), help="Write it to this file instead.")
def dump(vm: str, file: TextIO | None) -> None:
    """Print VM's domain XML, rendered from its definition (the same as `pvc vm info VM --xml`)."""
    v = from_context().get(path("vms", vm))
    if file is None:
        _echo_xml(v)
        return
    if v["xml"] is None:
        _echo_xml(v)  # says why on standard error
        raise Failure(f"VM '{v['name']}' has no definition: nothing written to {file.name}")
    file.write(v["xml"])
    click.echo(f"wrote the domain XML of VM '{v['name']}' to {file.name}", err=True)


def _echo_xml(v: dict) -> None:
    if v["xml"] is None:  # no definition: show what it was defined with, and why that is refused
        click.echo(f"VM '{v['name']}' has no definition; it was defined with this domain XML:", err=True)
        for r in v["refused"]:
            click.echo(f"  refused: {r['path']}: {r['message']}", err=True)
        click.echo(v["original_xml"] or "", nl=not (v["original_xml"] or "").endswith("\n"))
        return
    click.echo(v["xml"], nl=False)


def _describe(v: dict) -> str:
    d = v["definition"]
    head = [
        ("name", v["name"]),
        ("uuid", v["uuid"]),
        ("state", v["state"]),
        ("running", v["running"] + (f" on {v['running_on']}" if v["running_on"] else "")),
        ("reason", v["reason"] or None),
        ("node", v["node"]),
        ("last node", v["last_node"]),
    ]
    if d is None:
        refused = [("refused", f"{r['path']}: {r['message']}") for r in v["refused"]]
        return fields([*head, ("definition", "none: it cannot start (define it again, or modify it)"), *refused])
    topology = d["topology"]
    disks = [
        f"{x['volume']} ({x['device']}, {x['bus']}, cache {x['cache']}"
        + (", read-only" if x["read_only"] else "")
        + (f", {x['size']} bytes" if x["size"] else "")
        + ")"
        for x in d["disks"]
    ]
    live = v.get("live_nics", [])
    running = v["running"] == "running"
    nics = [
        f"network {n['network']} {n['mac']} ({n['model']})"
        + ("" if not running else ", plugged in" if n["mac"] in live else ", not plugged in yet")
        for n in d["nics"]
    ]
    placement, migration = d["placement"], d["migration"]
    rows = [
        *head,
        ("description", d["description"] or None),
        ("memory", mib(d["memory_mib"])),
        ("vcpus", d["vcpus"] if topology is None else f"{d['vcpus']} ({topology['sockets']} sockets × "
         f"{topology['cores']} cores × {topology['threads']} threads)"),
        ("machine", f"{d['machine']}, {d['firmware']}, boot {','.join(d['boot'])}"),
        ("cpu model", d["cpu_model"] or "the node's"),
        *[("disk" if i == 0 else "", text) for i, text in enumerate(disks or ["none"])],
        *[("nic" if i == 0 else "", text) for i, text in enumerate(nics or ["none"])],
        ("graphics", d["graphics"]),
        ("devices", ", ".join(name for name, on in (("serial console", d["serial_console"]), ("rng", d["rng"]),
                                                     ("guest agent", d["guest_agent"])) if on) or "none"),
        ("tags", d["tags"]),
        *_placement_rows(placement, migration),
        *[("pending" if i == 0 else "", line) for i, line in enumerate(v.get("pending", []))],
    ]  # fmt: skip
    return fields(rows)


def _placement_rows(placement: dict, migration: dict) -> list[tuple[str, object]]:
    downtime = migration["max_downtime_ms"]
    timeout = migration["timeout_s"]
    return [
        ("node limit", placement["node_limit"] or "any"),
        ("selector", placement["selector"] or "cluster default"),
        ("autostart", placement["autostart"]),
        ("migration method", migration["method"] or "cluster default"),
        ("max downtime", f"{downtime} ms" if downtime else "cluster default"),
        ("migration timeout", f"{timeout} s" if timeout else "cluster default"),
    ]


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
@click.option(
    "--node-limit", "--limit", "limit", callback=node_list, metavar="N1,N2", help="Nodes it may run on ('' for any)."
)
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
    """Show where and how VM runs (placement, migration, tags), or change it with the options given (others stay
    as they are). This edits the VM's definition."""
    placement: dict[str, object] = {}
    migration: dict[str, object] = {}
    if limit is not None:
        placement["node_limit"] = limit
    if selector is not None:
        placement["selector"] = None if selector == "default" else selector
    if autostart is not None:
        placement["autostart"] = autostart
    if method is not None:
        migration["method"] = None if method == "default" else method
    if max_downtime is not None or _given("max_downtime"):
        migration["max_downtime_ms"] = max_downtime
    if tags and no_tags:
        raise click.UsageError("--tag and --no-tags contradict each other")
    changes: dict[str, object] = {}
    if placement:
        changes["placement"] = placement
    if migration:
        changes["migration"] = migration
    if tags or no_tags:
        changes["tags"] = list(tags)
    client = from_context()
    data = client.patch(path("vms", vm), changes) if changes else client.get(path("vms", vm))
    d = data["definition"]
    if d is None:
        refused = "; ".join(f"{r['path']}: {r['message']}" for r in data["refused"])
        raise Failure(f"VM '{data['name']}' has no definition ({refused})")
    shown = {"placement": d["placement"], "migration": d["migration"], "tags": d["tags"]}
    emit(
        shown,
        fmt,
        lambda m: fields([("vm", data["name"]), *_placement_rows(m["placement"], m["migration"]), ("tags", m["tags"])]),
    )


def _given(name: str) -> bool:
    return click.get_current_context().get_parameter_source(name) == ParameterSource.COMMANDLINE


@vm.command()
@vm_argument
@lines_option
@follow_option
@format_option
def log(vm: str, lines: int, follow: bool, fmt: str) -> None:
    """The last lines of VM's serial console; with --follow, then the new ones as they come."""
    show(from_context(), path("vms", vm, "console"), lines, follow, fmt)


@vm.command()
@vm_argument
@click.option("--delete-disks", is_flag=True, help="Remove its volumes too (its cloud-init seed among them).")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def remove(vm: str, delete_disks: bool, yes: bool) -> None:
    """Remove a stopped or disabled VM from the cluster; with --delete-disks, its volumes too."""
    if not yes:
        also = " and its disks" if delete_disks else ""
        click.confirm(f"Remove VM '{vm}'{also}?", abort=True, err=True)
    query: dict[str, object] = {"delete_disks": "true"} if delete_disks else {}
    _remove(vm, query)


@vm.command()
@vm_argument
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
def undefine(vm: str, yes: bool) -> None:
    """Remove a stopped or disabled VM from the cluster, keeping its volumes (`remove` without --delete-disks)."""
    if not yes:
        click.confirm(f"Remove VM '{vm}' (its volumes stay)?", abort=True, err=True)
    _remove(vm, {})


def _remove(vm: str, query: dict[str, object]) -> None:
    data = from_context().request("DELETE", path("vms", vm), query=query)
    click.echo(f"removed VM '{data['removed']}'")
    for volume in data.get("volumes", []):
        click.echo(f"removed volume {volume}")
    if data.get("kept"):
        raise Failure("could not remove: " + "; ".join(data["kept"]))


vm.add_command(vmcreate.create)
