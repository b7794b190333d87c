"""`pvc-image`, the node image and test guest builder (docs/image.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import click

from pvc.image.recipe import COMPRESSION_LEVELS

T = TypeVar("T")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def cli() -> None:
    """Build the PVC node image (Debian 12 root, squashfs, USB image, hybrid ISO and PXE files) and the test guest
    disk."""


@cli.command("build")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder [default: build/image in the source tree].",
)
@click.option(
    "--compression",
    type=click.Choice(sorted(COMPRESSION_LEVELS)),
    default="zstd",
    show_default=True,
    help="squashfs compression: zstd (level 3, fast, for CI) or xz (about 20% smaller, minutes slower, releases).",
)
def build_cmd(out: Path | None, compression: str) -> None:
    """Build the image, reusing every cached stage whose inputs did not change.

    The cache is $PVC_IMAGE_CACHE or /var/cache/pvc-image. Needs root and the host packages of ci/setup.sh.
    """
    from pvc.image.build import DEFAULT_OUT, build

    arts = _run(lambda progress: build(out or DEFAULT_OUT, compression, progress))
    for path in arts.paths():
        click.echo(f"  {path}")


@cli.command("guest")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Output folder [default: build/guest in the source tree].",
)
def guest_cmd(out: Path | None) -> None:
    """Build the test guest: a small Debian 12 cloud guest disk (pvc-guest.qcow2) and its manifest.json.

    Cached by its inputs in $PVC_IMAGE_CACHE or /var/cache/pvc-image: a second run with nothing changed returns at
    once. Needs root and the host packages of ci/setup.sh.
    """
    from pvc.image.guest import DEFAULT_OUT, build_guest

    arts = _run(lambda progress: build_guest(out or DEFAULT_OUT, progress))
    click.echo(f"  {arts.qcow2}\n  {arts.manifest}")


def _run(build: Callable[[Callable[[str], None]], T]) -> T:
    """Run a build with progress on stdout; an expected failure is one line (and the log's tail), exit code 1."""
    from pvc.image.run import BuildError

    def progress(line: str) -> None:
        click.echo(line)
        sys.stdout.flush()

    try:
        return build(progress)
    except BuildError as exc:
        click.echo(f"pvc-image: {exc.stage}: {exc.message}", err=True)
        if exc.log_tail:
            click.echo("--- last lines of the log ---", err=True)
            click.echo(exc.log_tail, err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        click.echo("pvc-image: interrupted; the partial stage was discarded, the cache is intact", err=True)
        sys.exit(130)
    except OSError as exc:
        click.echo(f"pvc-image: {exc.strerror or exc} ({exc.filename or ''})", err=True)
        sys.exit(1)


def main(argv: list[str] | None = None) -> None:
    cli.main(args=argv, prog_name="pvc-image")
