"""Output of read commands: `--format table|json|yaml`. Tables are plain aligned columns, no colour.

json and yaml print what the API answered, unchanged, so scripts see every field; table is for people.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import click

FORMATS = ("table", "json", "yaml")
# terminal escape sequences (CSI, OSC, two-character) and the other C0 controls except tab, DEL, and the C1 controls
# U+0080-U+009F (U+009B is a CSI on terminals that read 8-bit controls)
CONTROL = re.compile(
    r"(?:\x1b\[|\x9b)[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b.?|[\x00-\x08\x0b-\x1f\x7f-\x9f]"
)
F = TypeVar("F", bound=Callable[..., Any])


def format_option(fn: F) -> F:
    return click.option(
        "--format",
        "fmt",
        type=click.Choice(FORMATS),
        default="table",
        show_default=True,
        help="Output format: aligned columns for people, or the API's document as JSON or YAML.",
    )(fn)


def emit(data: Any, fmt: str, render: Callable[[Any], str]) -> None:
    """Print `data` as JSON, YAML, or through `render` (a table or a list of fields)."""
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
    elif fmt == "yaml":
        import yaml

        click.echo(yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True), nl=False)
    else:
        text = render(data)
        if text:
            click.echo(text)


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Columns aligned with two spaces, headers in capitals, no trailing spaces."""
    cells = [[h.upper() for h in headers]] + [[cell(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = []
    for r in cells:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip())
    return "\n".join(lines)


def fields(pairs: Iterable[tuple[str, object]]) -> str:
    """`name:  value` lines with the values aligned."""
    items = [(k, cell(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0) + 1
    return "\n".join(f"{(k + ':').ljust(width)}  {v}".rstrip() for k, v in items)


def cell(value: object) -> str:
    """One table or field value as plain text: escape sequences and control characters removed (a VM name, tag or
    message comes from whoever wrote it, even a guest), tabs made spaces."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ",".join(cell(v) for v in value) or "-"
    if isinstance(value, float):
        return f"{value:g}"
    return CONTROL.sub("", str(value)).replace("\t", " ")


def mib(value: int | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1024:.1f}G" if value >= 10240 else f"{value}M"


def ago(stamp: float | None, now: float | None = None) -> str:
    """`12s`, `5m`, `3h`, `2d` since the epoch time `stamp`."""
    if not stamp:
        return "-"
    return duration(max(0.0, (now or time.time()) - stamp))


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m"
    if s < 172800:
        return f"{s // 3600}h"
    return f"{s // 86400}d"


def counts(c: dict) -> str:
    """`3 (2 run, 1 dead)` from the API's {"total", "by_state"}."""
    by_state = ", ".join(f"{n} {state}" for state, n in sorted(c["by_state"].items()))
    return f"{c['total']} ({by_state})" if by_state else str(c["total"])


def printable(lines: list[str]) -> str:
    """Log or console lines for a terminal: escape sequences and control characters removed (a guest's
    `ESC c` would otherwise reset the reader's terminal). JSON and YAML keep the lines as they are."""
    return "\n".join(CONTROL.sub("", line) for line in lines)
