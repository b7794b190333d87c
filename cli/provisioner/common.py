"""What every `pvc provisioner` noun shares: its list, info and remove commands, and how options become a body.

On `add` an option not given takes the API's default; on `modify` only the options given are sent, and an empty
value ('') clears an optional field (sent as null).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click

from pvc.cli.client import from_context, path
from pvc.cli.output import emit, format_option

Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


class Noun:
    """One kind of provisioner object: its route, how a person reads it, and how its `add` and `modify` options
    (`options(adding)`: Click decorators, applied in order) become a body (`body(options)`)."""

    def __init__(
        self,
        what: str,
        route: tuple[str, ...],
        rows: Callable[[list[dict]], str],
        detail: Callable[[dict], str],
        options: Callable[[bool], list[Decorator]],
        body: Callable[[dict[str, Any]], dict[str, Any]],
    ) -> None:
        self.what, self.route, self.rows, self.detail = what, route, rows, detail
        self.options, self.body = options, body

    def path(self, *rest: str) -> str:
        return path(*self.route, *rest)

    def commands(self, group: click.Group, add_help: str, modify_help: str) -> None:
        """`add`, `modify`, `list`, `info` and `remove` on `group`."""
        what = self.what

        @group.command("add", help=add_help)
        @click.argument("name")
        @stacked([*self.options(True), format_option])
        def add(name: str, fmt: str, **options: Any) -> None:
            data = from_context().post(self.path(), {"name": name, **self.body(options)})
            emit(data, fmt, lambda d: f"added {what} {d['name']}\n{self.detail(d)}")

        @group.command("modify", help=modify_help)
        @click.argument("name")
        @stacked([*self.options(False), format_option])
        def modify(name: str, fmt: str, **options: Any) -> None:
            body = self.body(options)
            if not body:
                raise click.UsageError("give at least one option to change")
            data = from_context().patch(self.path(name), body)
            emit(data, fmt, lambda d: f"changed {what} {d['name']}\n{self.detail(d)}")

        @group.command("list", help=f"Every {what}.")
        @format_option
        def list_(fmt: str) -> None:
            emit(from_context().get(self.path()), fmt, self.rows)

        @group.command("info", help=f"One {what}, and the profiles that use it.")
        @click.argument("name")
        @format_option
        def info(name: str, fmt: str) -> None:
            emit(from_context().get(self.path(name)), fmt, self.detail)

        @group.command("remove", help=f"Remove {what} NAME (refused while something uses it).")
        @click.argument("name")
        def remove(name: str) -> None:
            from_context().delete(self.path(name))
            click.echo(f"removed {what} {name}")


def stacked(decorators: list[Decorator]) -> Decorator:
    """Click decorators applied so that their options show in the order listed."""

    def apply(fn: Callable[..., Any]) -> Callable[..., Any]:
        for decorator in reversed(decorators):
            fn = decorator(fn)
        return fn

    return apply


def given(values: dict[str, Any], clearable: tuple[str, ...] = ()) -> dict[str, Any]:
    """The options that were given (not None), with '' as null for the fields in `clearable`."""
    out = {}
    for key, value in values.items():
        if value is None:
            continue
        out[key] = None if value == "" and key in clearable else value
    return out


def pairs(values: tuple[str, ...], option: str) -> dict[str, str]:
    """`key=value` options as a mapping (UsageError naming the option when one has no '=')."""
    out = {}
    for item in values:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise click.UsageError(f"{option} takes key=value, not '{item}'")
        out[key] = value
    return out


def names(values: tuple[str, ...]) -> list[str]:
    """Names given as repeated options and/or comma-separated lists."""
    return [n for v in values for n in v.split(",") if n]
