"""Reading a log the API keeps as its last lines (a VM's serial console, a node daemon's log): `--lines N`, and
`--follow`, which asks again every second and prints the lines that are new."""

from __future__ import annotations

import time
from collections.abc import Callable

import click

from pvc.cli.client import Client
from pvc.cli.output import emit, printable

FOLLOW_INTERVAL = 1.0
FOLLOW_WINDOW = 1000  # lines asked for at each poll while following: more new lines than this in a second are lost


def lines_option(fn: Callable) -> Callable:
    return click.option("--lines", "-n", "-l", type=click.IntRange(1, 10000), default=100, show_default=True)(fn)


def follow_option(fn: Callable) -> Callable:
    return click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until interrupted (Ctrl-C).")(fn)


def new_lines(before: list[str], now: list[str]) -> list[str]:
    """The lines of `now` (the last lines of a log) after those of `before` (an earlier read of its last lines):
    `now` minus its longest prefix that ends `before`. A log that has no such overlap is new as a whole."""
    for overlap in range(min(len(before), len(now)), 0, -1):
        if before[len(before) - overlap :] == now[:overlap]:
            return now[overlap:]
    return now


def show(client: Client, route: str, lines: int, follow: bool, fmt: str) -> None:
    """The last `lines` lines at `route` (`{"lines": [...]}`); with `follow`, then the new ones until Ctrl-C."""
    data = client.get(route, lines=lines)
    if not follow:
        emit(data, fmt, lambda d: printable(d["lines"]))
        return
    seen: list[str] = data["lines"]
    if seen:
        click.echo(printable(seen))
    try:
        while True:
            time.sleep(FOLLOW_INTERVAL)
            now = client.get(route, lines=FOLLOW_WINDOW)["lines"]
            fresh = new_lines(seen, now)
            if fresh:
                click.echo(printable(fresh))
            seen = now
    except KeyboardInterrupt:
        return
