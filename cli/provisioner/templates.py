"""`pvc provisioner template system|network|storage ...`: what a VM made from a profile gets: CPU, memory, firmware,
consoles and placement; NICs in order; disks, each cloned from an image or empty."""

from __future__ import annotations

from typing import Any

import click

from pvc.cli.output import fields, mib, table
from pvc.cli.provisioner.common import Decorator, Noun, given, names
from pvc.cli.storage.sizes import human, size_value
from pvc.config.choices import SELECTORS, VM_MIGRATION_METHODS

MiB = 1024**2


@click.group()
def template() -> None:
    """System, network and storage templates: what a profile's VMs are made of."""


# -- system -------------------------------------------------------------------------------------------------------
def _topology(t: dict) -> str:
    topo = t.get("topology")
    return f"{topo['sockets']}s×{topo['cores']}c×{topo['threads']}t" if topo else "-"


def system_rows(data: list[dict]) -> str:
    rows = [
        (t["name"], t["vcpus"], mib(t["memory_mib"]), t["machine"], t["firmware"], t["graphics"], t["profiles"])
        for t in data
    ]
    return table(["name", "vcpus", "memory", "machine", "firmware", "graphics", "profiles"], rows)


def system_detail(t: dict) -> str:
    return fields(
        [
            ("name", t["name"]),
            ("description", t["description"] or "-"),
            ("vCPUs", f"{t['vcpus']} ({_topology(t)})" if t.get("topology") else t["vcpus"]),
            ("memory", mib(t["memory_mib"])),
            ("machine", t["machine"]),
            ("firmware", t["firmware"]),
            ("CPU model", t["cpu_model"] or "default"),
            ("serial console", t["serial_console"]),
            ("graphics", t["graphics"]),
            ("RNG", t["rng"]),
            ("guest agent", t["guest_agent"]),
            ("node limit", t["node_limit"] or "any node"),
            ("node selector", t["node_selector"] or "the cluster's"),
            ("autostart", t["autostart"]),
            ("migration", t["migration_method"] or "the cluster's method"),
            ("max downtime", f"{t['migration_max_downtime_ms']} ms" if t["migration_max_downtime_ms"] else "-"),
            ("profiles", t["profiles"]),
        ]
    )


def system_options(adding: bool) -> list[Decorator]:
    clear = "" if adding else " ('' clears it)"
    return [
        click.option("--description", help="What it is for."),
        click.option("--vcpus", type=int, required=adding, help="Virtual CPUs."),
        click.option("--topology", metavar="S,C,T", help=f"Sockets, cores and threads (their product: vcpus){clear}."),
        click.option("--memory", callback=size_value, required=adding, help="Memory, like 2G or 512M."),
        click.option("--machine", help="Machine type: q35 (default) or pc."),
        click.option("--firmware", help="bios (default) or uefi."),
        click.option("--cpu-model", help=f"A CPU model name (default: host-passthrough under KVM){clear}."),
        click.option("--serial-console/--no-serial-console", default=None, help="A serial console (default: on)."),
        click.option("--graphics", help="none (default), vnc or spice (on 127.0.0.1 only)."),
        click.option("--rng/--no-rng", default=None, help="A virtio RNG (default: on)."),
        click.option("--guest-agent/--no-guest-agent", default=None, help="The guest agent channel (default: on)."),
        click.option("--node-limit", multiple=True, help=f"Nodes it may run on (repeat or comma-separate){clear}."),
        click.option(
            "--node-selector",
            type=click.Choice([*SELECTORS, *([] if adding else [""])]),
            help=f"How a node is chosen (default: the cluster's){clear}.",
        ),
        click.option("--autostart/--no-autostart", default=None, help="Start with the cluster (default: off)."),
        click.option(
            "--migration-method",
            type=click.Choice([*VM_MIGRATION_METHODS, *([] if adding else [""])]),
            help=f"Default: the cluster's{clear}.",
        ),
        click.option("--max-downtime", help=f"Live migration's maximum downtime, ms{clear}."),
    ]


def system_body(o: dict[str, Any]) -> dict[str, Any]:
    topology: Any = o["topology"]
    if topology:
        try:
            sockets, cores, threads = (int(x) for x in topology.split(","))
        except ValueError:
            raise click.BadParameter("give sockets,cores,threads, like 1,4,2", param_hint="--topology") from None
        topology = {"sockets": sockets, "cores": cores, "threads": threads}
    downtime: Any = o["max_downtime"]
    if downtime:
        if not downtime.isdigit():
            raise click.BadParameter("a number of milliseconds", param_hint="--max-downtime")
        downtime = int(downtime)
    return given(
        {
            "description": o["description"],
            "vcpus": o["vcpus"],
            "topology": topology,
            "memory_mib": o["memory"] // MiB if o["memory"] is not None else None,
            "machine": o["machine"],
            "firmware": o["firmware"],
            "cpu_model": o["cpu_model"],
            "serial_console": o["serial_console"],
            "graphics": o["graphics"],
            "rng": o["rng"],
            "guest_agent": o["guest_agent"],
            "node_limit": names(o["node_limit"]) if o["node_limit"] else None,  # --node-limit '' sends []
            "node_selector": o["node_selector"],
            "autostart": o["autostart"],
            "migration_method": o["migration_method"],
            "migration_max_downtime_ms": downtime,
        },
        clearable=("topology", "cpu_model", "node_selector", "migration_method", "migration_max_downtime_ms"),
    )


SYSTEM = Noun(
    "system template",
    ("provisioner", "templates", "system"),
    system_rows,
    system_detail,
    system_options,
    system_body,
)


@template.group()
def system() -> None:
    """System templates: vCPUs, memory, firmware, consoles, placement and migration."""


SYSTEM.commands(
    system,
    "Add system template NAME (--vcpus and --memory are required).",
    "Change system template NAME: only the options given.",
)


# -- network ------------------------------------------------------------------------------------------------------
def _nics(t: dict) -> str:
    return ",".join(f"{n['network']}" + (f":{n['model']}" if n["model"] != "virtio" else "") for n in t["nics"]) or "-"


def network_rows(data: list[dict]) -> str:
    rows = [(t["name"], _nics(t), t["mac_template"], t["profiles"]) for t in data]
    return table(["name", "nics (vni)", "mac template", "profiles"], rows)


def network_detail(t: dict) -> str:
    nics = [(f"eth{i}", f"network {n['network']}, {n['model']}") for i, n in enumerate(t["nics"])]
    return fields(
        [
            ("name", t["name"]),
            ("description", t["description"] or "-"),
            ("MAC template", t["mac_template"] or "none (PVC's MACs)"),
            *(nics or [("NICs", "none")]),
            ("profiles", t["profiles"]),
        ]
    )


def nic_value(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[dict] | None:
    if not values:
        return None
    nics = []
    for value in values:
        vni, _, model = value.partition(":")
        if not vni.isdigit():
            raise click.BadParameter(f"'{value}' is not VNI[:MODEL] (like 100 or 100:e1000e)")
        nics.append({"network": int(vni), **({"model": model} if model else {})})
    return nics


def network_options(adding: bool) -> list[Decorator]:
    return [
        click.option("--description", help="What it is for."),
        click.option(
            "--nic",
            "nics",
            multiple=True,
            callback=nic_value,
            metavar="VNI[:MODEL]",
            help="A NIC on network VNI, in order" + ("." if adding else " (replaces the list)."),
        ),
        *([] if adding else [click.option("--no-nics", is_flag=True, help="Remove every NIC.")]),
        click.option(
            "--mac-template",
            help="Like '{prefix}:{vmid}:{netid}' (default: PVC makes MACs" + (")." if adding else "; '' clears it)."),
        ),
    ]


def network_body(o: dict[str, Any]) -> dict[str, Any]:
    nics = [] if o.get("no_nics") else o["nics"]
    return given({"description": o["description"], "nics": nics, "mac_template": o["mac_template"]}, ("mac_template",))


NETWORK = Noun(
    "network template",
    ("provisioner", "templates", "network"),
    network_rows,
    network_detail,
    network_options,
    network_body,
)


@template.group()
def network() -> None:
    """Network templates: NICs in order (eth0, eth1, ...), each on a network by VNI, and a MAC template."""


NETWORK.commands(
    network, "Add network template NAME.", "Change network template NAME: only the options given; --nic replaces."
)


# -- storage ------------------------------------------------------------------------------------------------------
def _disk(d: dict) -> str:
    size = human(d["size"]) if d["size"] else "image size"
    return (
        f"{d['id']}: {d['pool']} {size}"
        + (f" from {d['image']}" if d["image"] else "")
        + (f" ({d['bus']})" if d["bus"] != "virtio" else "")
    )


def storage_rows(data: list[dict]) -> str:
    rows = [(t["name"], "; ".join(_disk(d) for d in t["disks"]) or "-", t["profiles"]) for t in data]
    return table(["name", "disks", "profiles"], rows)


def storage_detail(t: dict) -> str:
    return fields(
        [
            ("name", t["name"]),
            ("description", t["description"] or "-"),
            *([(d["id"], _disk(d).split(": ", 1)[1]) for d in t["disks"]] or [("disks", "none")]),
            ("profiles", t["profiles"]),
        ]
    )


DISK_KEYS = ("pool", "size", "image", "bus")


def disk_value(ctx: click.Context, param: click.Parameter, values: tuple[str, ...]) -> list[dict] | None:
    """`ID:pool=P,size=S,image=I,bus=B` options as disks."""
    if not values:
        return None
    disks = []
    for value in values:
        disk_id, sep, rest = value.partition(":")
        disk: dict[str, Any] = {"id": disk_id}
        for item in rest.split(",") if sep and rest else []:
            key, eq, val = item.partition("=")
            if not eq or key not in DISK_KEYS:
                raise click.BadParameter(f"'{item}' in '{value}': use {', '.join(k + '=' for k in DISK_KEYS)}")
            disk[key] = size_value(ctx, param, val) if key == "size" else val
        disks.append(disk)
    return disks


def storage_options(adding: bool) -> list[Decorator]:
    return [
        click.option("--description", help="What it is for."),
        click.option(
            "--disk",
            "disks",
            multiple=True,
            callback=disk_value,
            metavar="ID:pool=P,size=S[,image=I][,bus=B]",
            help="A disk, in order (the first boots): cloned from image I (grown to S) or empty of size S"
            + ("." if adding else " (replaces the list)."),
        ),
        *([] if adding else [click.option("--no-disks", is_flag=True, help="Remove every disk.")]),
    ]


def storage_body(o: dict[str, Any]) -> dict[str, Any]:
    return given({"description": o["description"], "disks": [] if o.get("no_disks") else o["disks"]})


STORAGE = Noun(
    "storage template",
    ("provisioner", "templates", "storage"),
    storage_rows,
    storage_detail,
    storage_options,
    storage_body,
)


@template.group()
def storage() -> None:
    """Storage templates: disks, each a new volume <vm>_<id> cloned from an image or empty."""


STORAGE.commands(
    storage, "Add storage template NAME.", "Change storage template NAME: only the options given; --disk replaces."
)
