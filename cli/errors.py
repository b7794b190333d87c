"""The one way the `pvc` command fails: a single line `pvc: ...` on standard error and exit status 1."""

from __future__ import annotations

from typing import IO, Any

import click


class Failure(click.ClickException):
    """An operation failed (the API said no, the network failed, a file is unreadable): one line, exit 1."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"pvc: {self.message}", err=True)
