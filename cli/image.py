"""`pvc image ...`: base images (an RBD volume with the protected snapshot VM disks are cloned from): upload, list,
info, remove."""

from __future__ import annotations

import os
from typing import Any

import click

from pvc.cli.client import ApiError, from_context, path
from pvc.cli.errors import Failure
from pvc.cli.output import ago, emit, fields, format_option, table
from pvc.cli.storage.sizes import human
from pvc.cli.storage.volumes import ByteProgress, Counting

IMAGE_FORMATS = ("raw", "qcow2", "vmdk")  # what the API's upload takes (pvc.api.models.UploadQuery)


def image_path(*rest: str) -> str:
    return path("provisioner", "images", *rest)


def format_of(head: bytes) -> str:
    """A disk image's format from its first bytes: qcow2 and VMDK by their magic, anything else raw."""
    if head.startswith(b"QFI\xfb"):
        return "qcow2"
    if head.startswith(b"KDMV"):
        return "vmdk"
    return "raw"


@click.group()
def image() -> None:
    """Base images: uploaded disk images that VM disks are cloned from (copy-on-write)."""


def image_rows(data: list[dict]) -> str:
    rows = [
        (i["name"], f"{i['pool']}/{i['volume']}", human(i["size"]), i["format"], ",".join(i["storage_templates"]))
        for i in data
    ]
    return table(["name", "volume", "size", "uploaded as", "storage templates"], rows)


def image_detail(i: dict) -> str:
    return fields(
        [
            ("name", i["name"]),
            ("description", i["description"] or "-"),
            ("volume", f"{i['pool']}/{i['volume']}@{i['snapshot']} (protected)"),
            ("size", human(i["size"])),
            ("uploaded as", i["format"]),
            ("created", f"{ago(i['created'])} ago"),
            ("storage templates", i["storage_templates"]),
            ("profiles", i["profiles"]),
            ("clones", i["clones"]),
        ]
    )


@image.command("list")
@format_option
def image_list(fmt: str) -> None:
    """Every base image."""
    emit(from_context().get(image_path()), fmt, image_rows)


@image.command("info")
@click.argument("name")
@format_option
def image_info(name: str, fmt: str) -> None:
    """One image: its volume and snapshot, and the storage templates, profiles and volumes that use it."""
    emit(from_context().get(image_path(name)), fmt, image_detail)


@image.command("upload")
@click.argument("name")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True))
@click.option("--pool", help="The RBD pool to store it in (default: the cluster's only one).")
@click.option(
    "--image-format", "image_format", type=click.Choice(IMAGE_FORMATS), help="Default: from the file's contents."
)
@click.option("--description", default="", help="What the image is.")
@click.option("--quiet", is_flag=True, help="No progress on standard error.")
@click.option("--force", is_flag=True, help="Even when the pool is over 80 % full.")
@format_option
def image_upload(
    name: str,
    file: str,
    pool: str | None,
    image_format: str | None,
    description: str,
    quiet: bool,
    force: bool,
    fmt: str,
) -> None:
    """Upload FILE (a raw, qcow2 or VMDK disk image) as base image NAME: the volume POOL/NAME and its protected
    snapshot, which VM disks are cloned from. Progress on standard error."""
    if image_format is None:
        with open(file, "rb") as fh:
            image_format = format_of(fh.read(4))
    query = {"pool": pool, "format": image_format, "description": description or None}
    data = upload_new(image_path(name), f"image '{name}'", file, {**query, "force": "true" if force else None}, quiet)
    emit(
        data,
        fmt,
        lambda i: (
            f"uploaded {file} ({image_format}) as image {i['name']}: {i['pool']}/{i['volume']}@{i['snapshot']} "
            f"({human(i['size'])})"
        ),
    )


def upload_new(route: str, what: str, file: str, query: dict[str, object], quiet: bool) -> Any:
    """PUT FILE to `route` (a new object: refused at once when `route` exists, before the file is sent), with
    progress on standard error; the API's answer."""
    c = from_context()
    try:
        c.get(route)
        raise Failure(f"{what} already exists")
    except ApiError as exc:
        if exc.status != 404:
            raise
    size = os.path.getsize(file)
    with open(file, "rb") as fh:
        progress = ByteProgress(f"upload {os.path.basename(file)}", size, quiet)
        return c.upload(route, Counting(fh, progress), size, query)


@image.command("remove")
@click.argument("name")
def image_remove(name: str) -> None:
    """Remove image NAME and its volume (refused while a storage template names it or disks are cloned from it)."""
    from_context().delete(image_path(name))
    click.echo(f"removed image {name}")
