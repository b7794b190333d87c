"""`pvc provisioner userdata ...`: cloud-init user-data documents (a #cloud-config YAML mapping or a MIME multipart
message), checked by the API when added or changed."""

from __future__ import annotations

import sys

import click

from pvc.cli.errors import Failure
from pvc.cli.output import fields, format_option, printable, table
from pvc.cli.provisioner.common import Noun, given


def userdata_rows(data: list[dict]) -> str:
    rows = [(u["name"], u["kind"], u["size"], u["profiles"], u["description"]) for u in data]
    return table(["name", "kind", "bytes", "profiles", "description"], rows)


def userdata_detail(u: dict) -> str:
    head = fields(
        [
            ("name", u["name"]),
            ("description", u["description"] or "-"),
            ("kind", u["kind"]),
            ("bytes", u["size"]),
            ("profiles", u["profiles"]),
        ]
    )
    return f"{head}\n---\n{printable(u['body'].splitlines())}" if "body" in u else head


USERDATA = Noun("userdata document", ("provisioner", "userdata"), userdata_rows, userdata_detail)


def read_document(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The document in FILE ('-': standard input)."""
    if value is None:
        return None
    try:
        if value == "-":
            return sys.stdin.read()
        with open(value, encoding="utf-8") as fh:
            return fh.read()
    except OSError as exc:
        raise Failure(f"cannot read {value}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise Failure(f"{value} is not UTF-8 text: user-data is a #cloud-config or MIME multipart document") from None


@click.group()
def userdata() -> None:
    """cloud-init user-data documents: #cloud-config YAML or MIME multipart."""


@userdata.command("add")
@click.argument("name")
@click.argument("file", callback=read_document, metavar="FILE")
@click.option("--description", help="What it does.")
@format_option
def userdata_add(name: str, file: str, description: str | None, fmt: str) -> None:
    """Add userdata document NAME from FILE ('-': standard input)."""
    USERDATA.add({"name": name, "body": file, **given({"description": description})}, fmt)


@userdata.command("modify")
@click.argument("name")
@click.argument("file", required=False, callback=read_document, metavar="[FILE]")
@click.option("--description", help="What it does.")
@format_option
def userdata_modify(name: str, file: str | None, description: str | None, fmt: str) -> None:
    """Change userdata document NAME: its body from FILE ('-': standard input), and/or its description."""
    USERDATA.modify(name, given({"body": file, "description": description}), fmt)


USERDATA.add_common(userdata)
