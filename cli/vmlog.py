"""`pvc vm log VM [--lines N] [--follow]` (also `pvc vm console`): the VM's serial console as pvcd keeps it in
ZooKeeper. `--follow` asks again every second and prints the lines that are new."""

from __future__ import annotations

import time

import click

from pvc.cli.client import from_context, path
from pvc.cli.names import vm_names
from pvc.cli.output import emit, format_option, printable

FOLLOW_INTERVAL = 1.0
FOLLOW_WINDOW = 1000  # lines asked for at each poll while following: more new lines than this in a second are lost


def new_lines(before: list[str], now: list[str]) -> list[str]:
    """The lines of `now` (the last lines of a log) after those of `before` (an earlier read of its last lines):
    `now` minus its longest prefix that ends `before`. A log that has no such overlap is new as a whole."""
    for overlap in range(min(len(before), len(now)), 0, -1):
        if before[len(before) - overlap :] == now[:overlap]:
            return now[overlap:]
    return now


@click.command("log")
@click.argument("vm", metavar="VM", shell_complete=vm_names)
@click.option("--lines", "-n", "-l", type=click.IntRange(1, 10000), default=100, show_default=True)
@click.option("--follow", "-f", is_flag=True, help="Keep printing new lines until interrupted (Ctrl-C).")
@format_option
def log(vm: str, lines: int, follow: bool, fmt: str) -> None:
    """The last lines of VM's serial console; with --follow, then the new ones as they come."""
    client = from_context()
    data = client.get(path("vms", vm, "console"), lines=lines)
    if not follow:
        emit(data, fmt, lambda d: printable(d["lines"]))
        return
    seen: list[str] = data["lines"]
    if seen:
        click.echo(printable(seen))
    try:
        while True:
            time.sleep(FOLLOW_INTERVAL)
            now = client.get(path("vms", vm, "console"), lines=FOLLOW_WINDOW)["lines"]
            fresh = new_lines(seen, now)
            if fresh:
                click.echo(printable(fresh))
            seen = now
    except KeyboardInterrupt:
        return
