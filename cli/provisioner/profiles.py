"""`pvc provisioner profile ...`: what `pvc vm create --profile` combines: templates, userdata, an OVA, default
arguments and extra cloud-init meta-data."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pvc.cli.output import fields, format_option, table
from pvc.cli.provisioner.common import Noun, given, pairs

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


PROFILE = Noun("profile", ("provisioner", "profiles"), profile_rows, profile_detail)


def profile_options(adding: bool) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    clear = "" if adding else " ('' clears it)"
    options = [
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
            help="A default argument of `pvc vm create` (repeat; on modify the given set replaces all).",
        ),
        click.option(
            "--meta",
            multiple=True,
            metavar="KEY=VALUE",
            help="An extra cloud-init meta-data key (repeat; on modify the given set replaces all).",
        ),
        format_option,
    ]
    if not adding:
        options.insert(-1, click.option("--no-args", is_flag=True, help="Remove every default argument."))
        options.insert(-1, click.option("--no-meta", is_flag=True, help="Remove every extra meta-data key."))

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for option in reversed(options):
            fn = option(fn)
        return fn

    return apply


def profile_body(o: dict[str, Any]) -> dict[str, Any]:
    args = {} if o.get("no_args") else (pairs(o["args"], "--arg") if o["args"] else None)
    meta = {} if o.get("no_meta") else (pairs(o["meta"], "--meta") if o["meta"] else None)
    values = {key: o[key] for key in ("description", "kind", *REFERENCES)}
    return given({**values, "arguments": args, "metadata": meta}, clearable=REFERENCES[1:])


@click.group()
def profile() -> None:
    """Profiles: templates, userdata and defaults that `pvc vm create --profile` makes VMs from."""


@profile.command("add")
@click.argument("name")
@profile_options(adding=True)
def profile_add(name: str, fmt: str, **options: Any) -> None:
    """Add profile NAME (--system-template is required)."""
    PROFILE.add({"name": name, **profile_body(options)}, fmt)


@profile.command("modify")
@click.argument("name")
@profile_options(adding=False)
def profile_modify(name: str, fmt: str, **options: Any) -> None:
    """Change profile NAME: only the options given."""
    PROFILE.modify(name, profile_body(options), fmt)


PROFILE.add_common(profile)
