"""`pvc vm create`: a VM from a provisioner profile, or from an image without templates, as a task.

The API checks everything before it makes anything, so a refusal names what is wrong and nothing is left; the
task then clones the disks, defines the VM, writes its cloud-init seed and starts it if asked (`--wait` follows it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from pvc.cli.client import from_context
from pvc.cli.errors import Failure
from pvc.cli.names import node_names
from pvc.cli.output import emit, format_option
from pvc.cli.provisioner.common import pairs
from pvc.cli.vmdefine import memory_mib
from pvc.cli.wait import TASK_TIMEOUT, conclude, follow_task, timeout_option, wait_option

QUICK = ("image", "memory", "disk_size", "pool", "networks", "ssh_keys", "userdata")


def ssh_keys(files: tuple[str, ...]) -> list[str]:
    """The public keys in the files: one per line, blank lines and '#' comments skipped."""
    keys: list[str] = []
    for name in files:
        try:
            text = Path(name).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise click.BadParameter(f"cannot read {name}: {exc}", param_hint="--ssh-key") from None
        found = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
        if not found:
            raise click.BadParameter(f"{name} holds no public key", param_hint="--ssh-key")
        keys += found
    return keys


def request_body(name: str, o: dict[str, Any]) -> dict[str, Any]:
    """The API's CreateRequest from the command's options (pure but for reading the files they name)."""
    given = [k for k in QUICK if o.get(k)]
    if o["profile"] and given:
        flag = "--" + given[0].replace("_", "-").removesuffix("s")
        raise Failure(f"{flag} is for a create without --profile (the profile's templates say it)")
    if not o["profile"] and not o["image"]:
        raise Failure("give --profile P, or --image IMG --memory SIZE to create without templates")
    body: dict[str, Any] = {"name": name, "start": o["start"], "arguments": pairs(o["args"], "--arg")}
    if o["node"]:
        body["node"] = o["node"]
    if not o["seed_volume"]:
        body["seed_volume"] = False
    if o["profile"]:
        return {**body, "profile": o["profile"]}
    if o["memory"] is None:
        raise Failure("--memory is needed with --image")
    body |= {"image": o["image"], "memory_mib": o["memory"], "vcpus": o["vcpus"], "networks": list(o["networks"])}
    if o["disk_size"]:
        body["disk_size"] = o["disk_size"]
    if o["pool"]:
        body["pool"] = o["pool"]
    if o["ssh_keys"]:
        body["ssh_keys"] = ssh_keys(o["ssh_keys"])
    if o["userdata"] is not None:
        body["userdata"] = o["userdata"].read()
    return body


@click.command()
@click.argument("name")
@click.option("--profile", help="Make it from this provisioner profile.")
@click.option("--node", help="Its home node (default: the one the selector picks).", shell_complete=node_names)
@click.option("--start", is_flag=True, help="Start it once it is made.")
@click.option(
    "--seed-volume/--no-seed-volume",
    default=True,
    show_default=True,
    help="Its cloud-init seed as a volume; without it, cloud-init reads the metadata service (managed networks).",
)
@click.option("--arg", "args", multiple=True, metavar="KEY=VALUE", help="A value for {{ KEY }} in the user-data.")
@click.option("--image", help="Without a profile: clone this image as its one disk.")
@click.option("--memory", type=memory_mib, metavar="SIZE", help="With --image: memory, MiB or like 2G.")
@click.option("--vcpus", type=click.IntRange(1, 255), default=1, show_default=True, help="With --image: vCPUs.")
@click.option("--disk-size", metavar="SIZE", help="With --image: the disk's size, like 20G (default: the image's).")
@click.option("--pool", help="With --image: the disk's pool (default: the image's).")
@click.option("--network", "networks", multiple=True, type=int, metavar="VNI", help="With --image: a NIC (repeat).")
@click.option("--ssh-key", "ssh_keys", multiple=True, metavar="FILE", help="With --image: public keys to log in with.")
@click.option(
    "--userdata", type=click.File("r", encoding="utf-8"), metavar="FILE", help="With --image: a user-data document."
)
@wait_option
@timeout_option(TASK_TIMEOUT)
@format_option
def create(name: str, wait: bool, timeout: float, fmt: str, **options: Any) -> None:
    """Create VM NAME from a profile (disks cloned from its images, a cloud-init seed from its userdata), or from
    an image with --image --memory [--disk-size --network --ssh-key --userdata]."""
    client = from_context()
    task = client.post("/provisioner/create", request_body(name, options))
    if wait:
        task = follow_task(client, task, timeout)
        if fmt == "table":
            conclude(task)
            return
    if fmt != "table":
        emit(task, fmt, str)
        if task["state"] == "failed":
            raise Failure(f"task {task['id']} (create {name}) failed: {task['message']}")
        return
    click.echo(f"create {name}: task {task['id']}; follow it with `pvc task show {task['id']} --wait`")
