"""`pvc vm network add|remove VM NETWORK`: attach a VM to a network (a new NIC) or detach it. The definition changes at
once; a running VM gets the NIC plugged in (or out) by its node, and `--wait` follows that."""

from __future__ import annotations

import click

from pvc.cli.aliases import AliasGroup
from pvc.cli.client import from_context, path
from pvc.cli.names import vm_names
from pvc.cli.output import emit, format_option, table
from pvc.cli.vmdevice import Device, follow, outcome
from pvc.cli.wait import VM_TIMEOUT, timeout_option, wait_option
from pvc.config.choices import NIC_MODELS

vm_argument = click.argument("vm", metavar="VM", shell_complete=vm_names)
network_argument = click.argument("network", metavar="NETWORK", type=click.IntRange(1, 16777215))


@click.group("network", cls=AliasGroup)
def network() -> None:
    """Attach VMs to networks, or detach them (hot-plugged into a running VM)."""


def _nic_of(v: dict, network: int, mac: str | None) -> dict:
    nics = (v.get("definition") or {}).get("nics", [])
    found = [n for n in nics if n["network"] == network and (mac is None or n["mac"] == mac)]
    return found[-1] if found else {"network": network, "mac": mac}


@network.command("add")
@vm_argument
@network_argument
@click.option("--mac", help="The NIC's MAC address (default: a free one in the cluster's prefix).")
@click.option("--model", type=click.Choice(NIC_MODELS), default="virtio", show_default=True)
@wait_option
@timeout_option(VM_TIMEOUT)
@format_option
def add(vm: str, network: int, mac: str | None, model: str, wait: bool, timeout: float, fmt: str) -> None:
    """Attach VM to NETWORK (its VNI) with a new NIC; a running VM gets it hot-plugged."""
    client = from_context()
    v = client.post(path("vms", vm, "networks"), {"network": network, "mac": mac, "model": model})
    nic = _nic_of(v, network, mac)
    device = Device("NIC", nic["mac"], "live_nics")
    if wait:
        v = follow(client, v, device, True, timeout)
    verb = f"added NIC {nic['mac']} ({nic.get('model', model)}) on network {network} to VM '{v['name']}'"
    emit(v, fmt, lambda d: outcome(d, device, True, verb))


@network.command("remove")
@vm_argument
@network_argument
@click.option("--mac", help="Which NIC, when VM has several on NETWORK.")
@wait_option
@timeout_option(VM_TIMEOUT)
@format_option
def remove(vm: str, network: int, mac: str | None, wait: bool, timeout: float, fmt: str) -> None:
    """Detach VM from NETWORK: its NIC there is removed; a running VM gets it unplugged."""
    client = from_context()
    before = client.get(path("vms", vm))
    nic = _nic_of(before, network, mac)
    v = client.request("DELETE", path("vms", vm, "networks", str(network)), query={"mac": mac})
    device = Device("NIC", nic.get("mac") or "?", "live_nics")
    if wait and nic.get("mac"):
        v = follow(client, v, device, False, timeout)
    verb = f"removed NIC {device.key} on network {network} from VM '{v['name']}'"
    emit(v, fmt, lambda d: outcome(d, device, False, verb))


@network.command("list")
@vm_argument
@format_option
def list_nics(vm: str, fmt: str) -> None:
    """VM's NICs: network, MAC, model, and whether each is plugged into the running VM."""
    v = from_context().get(path("vms", vm))
    nics = (v.get("definition") or {}).get("nics", [])
    running = v["running"] == "running"
    rows = [
        (n["network"], n["mac"], n["model"], ("yes" if n["mac"] in v["live_nics"] else "not yet") if running else "-")
        for n in nics
    ]
    emit(nics, fmt, lambda _: table(["network", "mac", "model", "plugged in"], rows) if rows else "no NICs")
