"""Sizes on the command line: `10G`, `512M`, `4096` in (parsed by pvc.config.sizes, as cluster.toml's are), and
`1.5G` out."""

from __future__ import annotations

import click

from pvc.config.sizes import parse_size


def size_value(ctx: click.Context | None, param: click.Parameter | None, value: str | None) -> int | None:
    """A Click callback: the option's or argument's text as bytes."""
    if value is None:
        return None
    try:
        return parse_size(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


def human(n: float | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "K", "M", "G", "T"):
        if abs(n) < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return str(n)
