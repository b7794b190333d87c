"""`pvc provisioner userdata ...`: cloud-init user-data documents (a #cloud-config YAML mapping or a MIME multipart
message), checked by the API when added or changed."""

from __future__ import annotations

import sys
from typing import Any

import click

from pvc.cli.errors import Failure
from pvc.cli.output import fields, printable, table
from pvc.cli.provisioner.common import Decorator, Noun, given


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


def userdata_options(adding: bool) -> list[Decorator]:
    return [
        click.argument("file", required=adding, callback=read_document, metavar="FILE" if adding else "[FILE]"),
        click.option("--description", help="What it does."),
    ]


def userdata_body(o: dict[str, Any]) -> dict[str, Any]:
    return given({"body": o["file"], "description": o["description"]})


USERDATA = Noun(
    "userdata document",
    ("provisioner", "userdata"),
    userdata_rows,
    userdata_detail,
    userdata_options,
    userdata_body,
)


@click.group()
def userdata() -> None:
    """cloud-init user-data documents: #cloud-config YAML or MIME multipart."""


USERDATA.commands(
    userdata,
    "Add userdata document NAME from FILE ('-': standard input).",
    "Change userdata document NAME: its body from FILE ('-': standard input), and/or its description.",
)
