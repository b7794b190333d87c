"""`pvc provisioner ova ...`: import an OVA (its disks into RBD, a profile of kind ova), list, info, remove."""

from __future__ import annotations

import click

from pvc.cli.client import from_context, path
from pvc.cli.image import upload_new
from pvc.cli.output import ago, emit, fields, format_option, table
from pvc.cli.storage.sizes import human


def ova_path(*rest: str) -> str:
    return path("provisioner", "ovas", *rest)


def ova_rows(data: list[dict]) -> str:
    rows = [
        (o["name"], o["vcpus"], f"{o['memory_mib']} MiB", len(o["disks"]), len(o["nics"]), ",".join(o["profiles"]))
        for o in data
    ]
    return table(["name", "vcpus", "memory", "disks", "nics", "profiles"], rows)


def ova_detail(o: dict) -> str:
    disks = [
        f"{d['id']}: {d['pool']}/{d['volume']} ({human(d['size'])}, {d['format']}, {d['bus']})" for d in o["disks"]
    ]
    return fields(
        [
            ("name", o["name"]),
            ("description", o["description"] or "-"),
            ("vcpus", o["vcpus"]),
            ("memory", f"{o['memory_mib']} MiB"),
            ("firmware", o["firmware"]),
            ("disks", disks),
            ("nics", [f"{n['network']} ({n['model']})" for n in o["nics"]]),
            ("created", f"{ago(o['created'])} ago"),
            ("profiles", o["profiles"]),
            ("clones", o["clones"]),
        ]
    )


@click.group()
def ova() -> None:
    """Imported OVAs: their disks as RBD volumes, and the profile of kind ova that VMs are created from."""


@ova.command("list")
@format_option
def ova_list(fmt: str) -> None:
    """Every imported OVA."""
    emit(from_context().get(ova_path()), fmt, ova_rows)


@ova.command("info")
@click.argument("name")
@format_option
def ova_info(name: str, fmt: str) -> None:
    """One OVA: its hardware, disks, NICs, and the profiles and VM disks that use it."""
    emit(from_context().get(ova_path(name)), fmt, ova_detail)


@ova.command("upload")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--pool", help="The RBD pool for its disks (default: the cluster's only one).")
@click.option(
    "--network",
    "networks",
    multiple=True,
    metavar="OVFNET=VNI",
    help="The PVC network the NICs on the OVF's network OVFNET go on (repeat; default: the one of the same name).",
)
@click.option("--description", default="", help="What the OVA is.")
@click.option("--quiet", is_flag=True, help="No progress on standard error.")
@format_option
def ova_upload(
    name: str, file: str, pool: str | None, networks: tuple[str, ...], description: str, quiet: bool, fmt: str
) -> None:
    """Import FILE (an OVA) as NAME: each disk converted into the volume POOL/ova_NAME_sdX (with a protected
    snapshot), and the system template, network template and profile NAME (kind ova) made from its OVF, for
    `pvc vm create VM --profile NAME`. Progress on standard error."""
    for pair in networks:
        if "=" not in pair:
            raise click.UsageError(f"--network takes OVFNET=VNI, not '{pair}'")
    query: dict[str, object] = {
        "pool": pool,
        "description": description or None,
        "networks": ",".join(networks) or None,
    }
    data = upload_new(ova_path(name), f"OVA '{name}'", file, query, quiet)
    emit(
        data,
        fmt,
        lambda o: (
            f"imported {file} as OVA {o['name']}: {len(o['disks'])} disk(s) in "
            f"{', '.join(sorted({d['pool'] for d in o['disks']}))}; profile {o['name']} "
            f"({o['vcpus']} vCPUs, {o['memory_mib']} MiB, {len(o['nics'])} NIC(s))"
        ),
    )


@ova.command("remove")
@click.argument("name")
def ova_remove(name: str) -> None:
    """Remove OVA NAME: its volumes, and the profile and templates its upload made (refused while another profile
    names it or VM disks are cloned from it)."""
    from_context().delete(ova_path(name))
    click.echo(f"removed OVA {name}")
