"""`pvc vm network add|remove VM NETWORK`: attach a VM to a network (a new NIC) or detach it. The definition changes at
once; a running VM gets the NIC plugged in (or out) by its node, and `--wait` follows that."""

from __future__ import annotations

import time

import click

from pvc.cli.client import Client, from_context, path
from pvc.cli.errors import Failure
from pvc.cli.names import vm_names
from pvc.cli.output import emit, format_option
from pvc.cli.wait import POLL_INTERVAL, VM_TIMEOUT, Interrupted, poll, timeout_option, wait_option
from pvc.config.choices import NIC_MODELS

vm_argument = click.argument("vm", metavar="VM", shell_complete=vm_names)
network_argument = click.argument("network", metavar="NETWORK", type=click.IntRange(1, 16777215))


@click.group("network")
def network() -> None:
    """Attach VMs to networks, or detach them (hot-plugged into a running VM)."""


def _nic_of(v: dict, network: int, mac: str | None) -> dict:
    nics = (v.get("definition") or {}).get("nics", [])
    found = [n for n in nics if n["network"] == network and (mac is None or n["mac"] == mac)]
    return found[-1] if found else {"network": network, "mac": mac}


def _settled(v: dict, mac: str, wanted: bool) -> bool:
    """The running VM has the NIC plugged in (`wanted`) or not, or a line of `pending` says why it has not yet."""
    if v["running"] != "running":
        return True
    return (mac in v.get("live_nics", [])) == wanted or any(mac in line for line in v.get("pending", []))


def _follow(client: Client, v: dict, mac: str, wanted: bool, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    try:
        while not _settled(v, mac, wanted):
            if time.monotonic() > deadline:
                raise Failure(
                    f"gave up waiting after {timeout:g} s: VM '{v['name']}' on {v['running_on']} has not "
                    f"{'plugged in' if wanted else 'unplugged'} NIC {mac} yet"
                )
            time.sleep(POLL_INTERVAL)
            v = poll(client, path("vms", v["uuid"]))
    except KeyboardInterrupt:
        raise Interrupted(f"stopped waiting; the node of VM '{v['name']}' goes on with NIC {mac}") from None
    return v


def _outcome(v: dict, mac: str, wanted: bool, verb: str) -> str:
    if v["running"] != "running":
        return f"{verb}; VM '{v['name']}' is {v['running']}, so it applies when it starts"
    waiting = [line for line in v.get("pending", []) if mac in line]
    if waiting:
        return f"{verb}; {'; '.join(waiting)}"
    if (mac in v.get("live_nics", [])) == wanted:
        return f"{verb}; {'plugged into' if wanted else 'unplugged from'} the running VM on {v['running_on']}"
    return f"{verb}; the node of VM '{v['name']}' plugs it {'in' if wanted else 'out'} (see pvc vm info)"


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
    if wait:
        v = _follow(client, v, nic["mac"], True, timeout)
    verb = f"added NIC {nic['mac']} ({nic.get('model', model)}) on network {network} to VM '{v['name']}'"
    emit(v, fmt, lambda d: _outcome(d, nic["mac"], True, verb))


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
    if wait and nic.get("mac"):
        v = _follow(client, v, nic["mac"], False, timeout)
    verb = f"removed NIC {nic.get('mac') or '?'} on network {network} from VM '{v['name']}'"
    emit(v, fmt, lambda d: _outcome(d, nic.get("mac") or "?", False, verb))
