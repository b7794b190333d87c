"""Names on the command line: shell completion of VM, node and connection names (asks the API with a short timeout;
silent on failure), and a REGEX argument that filters a list by name."""

from __future__ import annotations

import re

import click
from click.shell_completion import CompletionItem

from pvc.cli.profiles import load

COMPLETION_TIMEOUT = 3.0


def _from_api(ctx: click.Context, route: str, incomplete: str) -> list[CompletionItem]:
    from pvc.cli.client import from_context  # only when completing: `pvc connection ...` needs no HTTP client

    try:
        items = from_context(ctx, timeout=COMPLETION_TIMEOUT).get(route)
    except (click.ClickException, OSError, ValueError):
        return []
    return [CompletionItem(i["name"]) for i in items if str(i.get("name", "")).startswith(incomplete)]


def vm_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _from_api(ctx, "/vms", incomplete)


def node_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    return _from_api(ctx, "/nodes", incomplete)


def connection_names(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[CompletionItem]:
    try:
        names = load().connections
    except click.ClickException:
        return []
    return [CompletionItem(n) for n in sorted(names) if n.startswith(incomplete)]


def name_regex(ctx: click.Context, param: click.Parameter, value: str | None) -> re.Pattern[str] | None:
    """A `[REGEX]` argument, compiled (a bad one is a usage error saying why)."""
    if value is None:
        return None
    try:
        return re.compile(value)
    except re.error as exc:
        raise click.BadParameter(f"'{value}' is not a regular expression: {exc}") from None
