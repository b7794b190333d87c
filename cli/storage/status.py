"""`pvc storage status`: Ceph health and usage."""

from __future__ import annotations

import click

from pvc.cli.client import from_context
from pvc.cli.output import ago, emit, fields, format_option
from pvc.cli.storage.sizes import human


@click.command()
@format_option
def status(fmt: str) -> None:
    """Ceph health and usage (as the primary coordinator last measured it)."""
    data = from_context().get("/storage")

    def render(s: dict) -> str:
        checks = "; ".join(f"{k}: {v}" for k, v in s["checks"].items())
        pgs = ", ".join(f"{n} {state}" for state, n in sorted(s["pg_states"].items()))
        return fields(
            [
                ("health", s["health"] + (f" ({checks})" if checks else "")),
                ("used", f"{human(s['used_bytes'])} of {human(s['total_bytes'])} ({s['used_percent']:g}%)"),
                ("osds", f"{s['osds']} ({s['osds_up']} up, {s['osds_in']} in)"),
                ("pgs", f"{s['pgs']}" + (f" ({pgs})" if pgs else "")),
                ("pools", len(s["pools"])),
                ("measured", f"{ago(s['updated'])} ago by {s['by'] or '-'}"),
            ]
        )

    emit(data, fmt, render)
