"""Stage 4, squashfs: the layers merged read-only (overlayfs) and packed with mksquashfs.

In: the layer directories (top first). Out: filesystem.squashfs. The initramfs stays out of the root (it is a
separate artefact); the kernel stays in, so a node has one for small nested test domains.
"""

from __future__ import annotations

from pathlib import Path

from pvc.image.recipe import Recipe
from pvc.image.run import Runner, overlay

STAGE = "squashfs"
EXCLUDE = ("boot/initrd.img*",)


def mksquashfs_argv(source: Path, dest: Path, recipe: Recipe) -> list[str]:
    argv = ["mksquashfs", str(source), str(dest), *recipe.squashfs_options(), "-noappend", "-no-progress", "-quiet"]
    argv += ["-wildcards", *(arg for pattern in EXCLUDE for arg in ("-e", pattern))]
    return argv


def build(layers: list[Path], dest: Path, recipe: Recipe, work: Path, runner: Runner) -> None:
    with overlay(runner, layers, work / "mnt") as mnt:
        runner.run(mksquashfs_argv(mnt, dest, recipe))
