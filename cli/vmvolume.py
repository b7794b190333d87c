"""`pvc vm volume add|remove|list VM ...`: attach an existing RBD volume to a VM as a disk, detach it, list the VM's
disks. The definition changes at once; a running VM gets the disk plugged in (or out) by its node, and `--wait`
follows that. Removing a disk keeps its volume (`pvc storage volume remove` deletes it)."""

from __future__ import annotations

import click

from pvc.cli.aliases import AliasGroup
from pvc.cli.client import from_context, path
from pvc.cli.names import vm_names
from pvc.cli.output import emit, format_option, table
from pvc.cli.vmdevice import Device, follow, outcome
from pvc.cli.wait import VM_TIMEOUT, timeout_option, wait_option

vm_argument = click.argument("vm", metavar="VM", shell_complete=vm_names)


def _pool_volume(ctx: click.Context, param: click.Parameter, value: str) -> str:
    pool, sep, name = value.partition("/")
    if not (pool and sep and name):
        raise click.BadParameter(f"'{value}' is not an RBD volume; give it as POOL/VOLUME")
    return value


volume_argument = click.argument("volume", metavar="POOL/VOLUME", callback=_pool_volume)


@click.group("volume", cls=AliasGroup)
def volume() -> None:
    """A VM's disks: attach RBD volumes, detach them (hot-plugged into a running VM), list them."""


def _device(volume: str) -> Device:
    return Device("disk", volume, "live_volumes")


@volume.command("add")
@vm_argument
@volume_argument
@click.option("--bus", type=click.Choice(["virtio", "scsi"]), default="virtio", show_default=True)
@wait_option
@timeout_option(VM_TIMEOUT)
@format_option
def add(vm: str, volume: str, bus: str, wait: bool, timeout: float, fmt: str) -> None:
    """Attach the RBD volume POOL/VOLUME to VM as its last disk; a running VM gets it hot-plugged."""
    client = from_context()
    v = client.post(path("vms", vm, "volumes"), {"volume": volume, "bus": bus})
    if wait:
        v = follow(client, v, _device(volume), True, timeout)
    verb = f"added disk {volume} ({bus}) to VM '{v['name']}'"
    emit(v, fmt, lambda d: outcome(d, _device(volume), True, verb))


@volume.command("remove")
@vm_argument
@volume_argument
@wait_option
@timeout_option(VM_TIMEOUT)
@format_option
def remove(vm: str, volume: str, wait: bool, timeout: float, fmt: str) -> None:
    """Detach POOL/VOLUME from VM (the volume stays); a running VM gets it unplugged."""
    client = from_context()
    pool, _, name = volume.partition("/")
    v = client.delete(path("vms", vm, "volumes", pool, name))
    if wait:
        v = follow(client, v, _device(volume), False, timeout)
    verb = f"removed disk {volume} from VM '{v['name']}' (the volume stays)"
    emit(v, fmt, lambda d: outcome(d, _device(volume), False, verb))


@volume.command("list")
@vm_argument
@format_option
def list_volumes(vm: str, fmt: str) -> None:
    """VM's disks: volume, device, bus, and whether each is plugged into the running VM."""
    v = from_context().get(path("vms", vm))
    disks = (v.get("definition") or {}).get("disks", [])
    running = v["running"] == "running"
    rows = [
        (
            d["volume"],
            d["device"],
            d["bus"],
            "yes" if d["read_only"] else "no",
            ("yes" if d["volume"] in v["live_volumes"] else "not yet") if running else "-",
        )
        for d in disks
    ]
    headers = ["volume", "device", "bus", "read-only", "plugged in"]
    emit(disks, fmt, lambda _: table(headers, rows) if rows else "no disks")
