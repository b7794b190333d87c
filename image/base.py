"""Stage 1, base rootfs: mmdebstrap of the node package set, then hooks/customize.sh inside it.

In: the recipe and the customize script. Out: `<entry>/root` (the tree) and `<entry>/boot/{vmlinuz,initrd.img}`.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pvc.image.recipe import CUSTOMIZE_SCRIPT, Recipe
from pvc.image.run import BuildError, Runner

STAGE = "base rootfs"


def mmdebstrap_argv(recipe: Recipe, customize: Path, target: Path) -> list[str]:
    argv = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={recipe.variant}",
        "--include=" + ",".join(recipe.packages),
        '--aptopt=APT::Install-Recommends "false"',
        '--aptopt=Acquire::Retries "3"',
    ]
    argv += [f"--dpkgopt={rule}" for rule in recipe.dpkg_path_filters]
    argv += [
        '--customize-hook=mkdir -p "$1/tmp/pvc-image"',
        f"--customize-hook=copy-in {customize} /tmp/pvc-image",
        f'--customize-hook=chroot "$1" sh /tmp/pvc-image/{customize.name}',
        '--customize-hook=rm -rf "$1/tmp/pvc-image"',
        recipe.suite,
        str(target),
        *recipe.sources(),
    ]
    return argv


def kernel_files(root: Path) -> tuple[Path, Path]:
    """The newest /boot/vmlinuz-* and its initrd.img-* in the tree."""
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    if not kernels:
        raise BuildError(STAGE, f"no kernel in {root}/boot after mmdebstrap")
    kernel = kernels[-1]
    initrd = root / "boot" / ("initrd.img-" + kernel.name.removeprefix("vmlinuz-"))
    if not initrd.is_file():
        raise BuildError(STAGE, f"no initramfs {initrd.name} beside {kernel.name}")
    return kernel, initrd


def build(recipe: Recipe, work: Path, runner: Runner) -> dict:
    """Build the base tree into `work`. Returns plain facts for meta.json."""
    root = work / "root"
    runner.run(mmdebstrap_argv(recipe, CUSTOMIZE_SCRIPT, root))
    kernel, initrd = kernel_files(root)
    boot = work / "boot"
    boot.mkdir()
    shutil.copy2(kernel, boot / "vmlinuz")
    shutil.copy2(initrd, boot / "initrd.img")
    return {"kernel": kernel.name.removeprefix("vmlinuz-")}
