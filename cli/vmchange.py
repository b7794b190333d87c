"""Day-two changes of a VM under the original PVC's names: `pvc vm rename`, `vm vcpu get|set`, `vm memory get|set`
and `vm tag get|add|remove`. Each edits the VM's typed definition through the API; vCPUs and memory reach a running
VM at its next start, and the answer says so."""

from __future__ import annotations

import click

from pvc.cli.client import from_context, path
from pvc.cli.errors import Failure
from pvc.cli.names import vm_names
from pvc.cli.output import emit, fields, format_option, mib
from pvc.cli.vmdefine import memory_mib

vm_argument = click.argument("vm", metavar="VM", shell_complete=vm_names)


def _when(v: dict) -> str:
    if v["running"] == "running":
        return (
            f"VM '{v['name']}' is running, so it applies at its next start (pvc vm restart {v['name']}): "
            "PVC gives a VM fixed vCPUs and memory, which libvirt cannot change live"
        )
    return f"VM '{v['name']}' is {v['running']}, so it applies when it starts"


def _definition(vm: str) -> tuple[dict, dict]:
    v = from_context().get(path("vms", vm))
    if v["definition"] is None:
        refused = "; ".join(f"{r['path']}: {r['message']}" for r in v["refused"])
        raise Failure(f"VM '{v['name']}' has no definition ({refused})")
    return v, v["definition"]


@click.command()
@vm_argument
@click.argument("new_name", metavar="NEW")
@format_option
def rename(vm: str, new_name: str, fmt: str) -> None:
    """Rename VM to NEW. Only a stopped VM can be renamed (stop it first); names are unique."""
    v = from_context().post(path("vms", vm, "rename"), {"name": new_name})
    emit(v, fmt, lambda d: f"renamed VM '{vm}' to '{d['name']}' ({d['uuid']})")


# -- vCPUs ------------------------------------------------------------------------------------------------------
@click.group()
def vcpu() -> None:
    """A VM's vCPUs: show them, or set them (at the VM's next start)."""


def _topology(ctx: click.Context, param: click.Parameter, value: str | None) -> dict[str, int] | None:
    if value is None:
        return None
    parts = value.split(",")
    if len(parts) != 3 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"'{value}' is not SOCKETS,CORES,THREADS (three positive numbers, like 1,4,2)")
    sockets, cores, threads = (int(p) for p in parts)
    return {"sockets": sockets, "cores": cores, "threads": threads}


@vcpu.command("get")
@vm_argument
@format_option
def vcpu_get(vm: str, fmt: str) -> None:
    """VM's vCPU count and topology."""
    v, d = _definition(vm)
    shown = {"vcpus": d["vcpus"], "topology": d["topology"]}
    t = d["topology"]
    topology = f"{t['sockets']} sockets × {t['cores']} cores × {t['threads']} threads" if t else "default"
    emit(shown, fmt, lambda _: fields([("vm", v["name"]), ("vcpus", d["vcpus"]), ("topology", topology)]))


@vcpu.command("set")
@vm_argument
@click.argument("count", metavar="N", type=click.IntRange(1, 255))
@click.option(
    "--topology", "-t", callback=_topology, metavar="S,C,T", help="Sockets, cores and threads (their product is N)."
)
@format_option
def vcpu_set(vm: str, count: int, topology: dict[str, int] | None, fmt: str) -> None:
    """Give VM N vCPUs (a topology that no longer fits is dropped unless --topology gives one)."""
    body: dict[str, object] = {"vcpus": count}
    if topology is not None:
        body["topology"] = topology
    v = from_context().patch(path("vms", vm, "resources"), body)
    emit(v, fmt, lambda d: f"set VM '{d['name']}' to {count} vCPUs; {_when(d)}")


# -- memory -----------------------------------------------------------------------------------------------------
@click.group()
def memory() -> None:
    """A VM's memory: show it, or set it (at the VM's next start)."""


@memory.command("get")
@vm_argument
@format_option
def memory_get(vm: str, fmt: str) -> None:
    """VM's memory."""
    v, d = _definition(vm)
    emit({"memory_mib": d["memory_mib"]}, fmt, lambda _: fields([("vm", v["name"]), ("memory", mib(d["memory_mib"]))]))


@memory.command("set")
@vm_argument
@click.argument("size", metavar="SIZE", type=memory_mib)
@format_option
def memory_set(vm: str, size: int, fmt: str) -> None:
    """Give VM SIZE of memory (MiB, or like 4G or 512M); more than the largest node has is refused."""
    v = from_context().patch(path("vms", vm, "resources"), {"memory_mib": size})
    emit(v, fmt, lambda d: f"set VM '{d['name']}' to {mib(size)} of memory; {_when(d)}")


# -- tags -------------------------------------------------------------------------------------------------------
@click.group()
def tag() -> None:
    """A VM's tags: show, add, remove."""


@tag.command("get")
@vm_argument
@format_option
def tag_get(vm: str, fmt: str) -> None:
    """VM's tags."""
    v, d = _definition(vm)
    emit({"tags": d["tags"]}, fmt, lambda _: "\n".join(d["tags"]) if d["tags"] else f"VM '{v['name']}' has no tags")


def _set_tags(vm: str, change: str, tags: tuple[str, ...], fmt: str) -> None:
    v, d = _definition(vm)
    if change == "add":
        new = [*d["tags"], *[t for t in dict.fromkeys(tags) if t not in d["tags"]]]
    else:
        new = [t for t in d["tags"] if t not in tags]
    v = from_context().patch(path("vms", vm), {"tags": new})
    tags_now = v["definition"]["tags"]
    emit({"tags": tags_now}, fmt, lambda _: f"VM '{v['name']}' tags: {', '.join(tags_now) or 'none'}")


@tag.command("add")
@vm_argument
@click.argument("tags", metavar="TAG...", nargs=-1, required=True)
@format_option
def tag_add(vm: str, tags: tuple[str, ...], fmt: str) -> None:
    """Add TAGs to VM (the tags it has stay)."""
    _set_tags(vm, "add", tags, fmt)


@tag.command("remove")
@vm_argument
@click.argument("tags", metavar="TAG...", nargs=-1, required=True)
@format_option
def tag_remove(vm: str, tags: tuple[str, ...], fmt: str) -> None:
    """Remove TAGs from VM."""
    _set_tags(vm, "remove", tags, fmt)
