"""Following a device hot-plug (a NIC, an RBD disk) until the VM's node has plugged it in or out, and saying what
happened: live, or at the next start. `vm network add|remove` and `vm volume add|remove` share these."""

from __future__ import annotations

import time
from dataclasses import dataclass

from pvc.cli.client import Client, path
from pvc.cli.errors import Failure
from pvc.cli.wait import POLL_INTERVAL, Interrupted, poll


@dataclass(frozen=True)
class Device:
    what: str  # "NIC", "disk"
    key: str  # its MAC, its pool/volume
    live: str  # the VM's field listing what is plugged in: "live_nics", "live_volumes"

    def __str__(self) -> str:
        return f"{self.what} {self.key}"


def settled(v: dict, device: Device, wanted: bool) -> bool:
    """The running VM has the device plugged in (`wanted`) or not, or a line of `pending` says why it has not yet."""
    if v["running"] != "running":
        return True
    return (device.key in v.get(device.live, [])) == wanted or any(device.key in line for line in v.get("pending", []))


def follow(client: Client, v: dict, device: Device, wanted: bool, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    try:
        while not settled(v, device, wanted):
            if time.monotonic() > deadline:
                raise Failure(
                    f"gave up waiting after {timeout:g} s: VM '{v['name']}' on {v['running_on']} has not "
                    f"{'plugged in' if wanted else 'unplugged'} {device} yet"
                )
            time.sleep(POLL_INTERVAL)
            v = poll(client, path("vms", v["uuid"]))
    except KeyboardInterrupt:
        raise Interrupted(f"stopped waiting; the node of VM '{v['name']}' goes on with {device}") from None
    return v


def outcome(v: dict, device: Device, wanted: bool, verb: str) -> str:
    """`verb`, and whether the change is live or waits for the VM's next start."""
    if v["running"] != "running":
        return f"{verb}; VM '{v['name']}' is {v['running']}, so it applies when it starts"
    waiting = [line for line in v.get("pending", []) if device.key in line]
    if waiting:
        return f"{verb}; {'; '.join(waiting)}"
    if (device.key in v.get(device.live, [])) == wanted:
        return f"{verb}; {'plugged into' if wanted else 'unplugged from'} the running VM on {v['running_on']}"
    return f"{verb}; the node of VM '{v['name']}' plugs it {'in' if wanted else 'out'} (see pvc vm info)"
