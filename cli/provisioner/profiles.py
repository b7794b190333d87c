"""`pvc provisioner profile ...`: what `pvc vm create --profile` combines: templates, userdata, an OVA, default
arguments and extra cloud-init meta-data."""

from __future__ import annotations

from typing import Any

import click

from pvc.cli.output import fields, table
from pvc.cli.provisioner.common import Decorator, Noun, given, pairs

REFERENCES = ("system_template", "network_template", "storage_template", "userdata", "ova")


def profile_rows(data: list[dict]) -> str:
    rows = [
        (p["name"], p["kind"], p["system_template"], p["network_template"], p["storage_template"], p["userdata"])
        for p in data
    ]
    return table(["name", "kind", "system", "network", "storage", "userdata"], rows)


def profile_detail(p: dict) -> str:
    return fields(
        [
            ("name", p["name"]),
            ("description", p["description"] or "-"),
            ("kind", p["kind"]),
            ("system template", p["system_template"]),
            ("network template", p["network_template"]),
            ("storage template", p["storage_template"]),
            ("userdata", p["userdata"]),
            *([("OVA", p["ova"])] if p["kind"] == "ova" else []),
            ("arguments", ", ".join(f"{k}={v}" for k, v in p["arguments"].items()) or "-"),
            ("meta-data", ", ".join(f"{k}={v}" for k, v in p["metadata"].items()) or "-"),
        ]
    )


def profile_options(adding: bool) -> list[Decorator]:
    clear = "" if adding else " ('' clears it)"
    every = "" if adding else "; the given set replaces all"
    return [
        click.option("--description", help="What it makes."),
        click.option(
            "--kind",
            type=click.Choice(["image", "ova"]),
            help="image (default): disks from the storage template; ova: from the OVA.",
        ),
        click.option("--system-template", required=adding, help="CPU, memory, firmware, placement."),
        click.option("--network-template", help=f"NICs{clear}."),
        click.option("--storage-template", help=f"Disks{clear}."),
        click.option("--userdata", help=f"cloud-init user-data{clear}."),
        click.option("--ova", help=f"The OVA of a profile of kind ova{clear}."),
        click.option(
            "--arg",
            "args",
            multiple=True,
            metavar="KEY=VALUE",
            help=f"A default of `pvc vm create --arg` (repeat{every}).",
        ),
        click.option("--meta", multiple=True, metavar="KEY=VALUE", help=f"An extra meta-data key (repeat{every})."),
        *(
            []
            if adding
            else [
                click.option("--no-args", is_flag=True, help="Remove every default argument."),
                click.option("--no-meta", is_flag=True, help="Remove every extra meta-data key."),
            ]
        ),
    ]


def profile_body(o: dict[str, Any]) -> dict[str, Any]:
    args = {} if o.get("no_args") else (pairs(o["args"], "--arg") if o["args"] else None)
    meta = {} if o.get("no_meta") else (pairs(o["meta"], "--meta") if o["meta"] else None)
    values = {key: o[key] for key in ("description", "kind", *REFERENCES)}
    return given({**values, "arguments": args, "metadata": meta}, clearable=REFERENCES[1:])


PROFILE = Noun("profile", ("provisioner", "profiles"), profile_rows, profile_detail, profile_options, profile_body)


@click.group()
def profile() -> None:
    """Profiles: templates, userdata and defaults that `pvc vm create --profile` makes VMs from."""


PROFILE.commands(
    profile, "Add profile NAME (--system-template is required).", "Change profile NAME: only the options given."
)
