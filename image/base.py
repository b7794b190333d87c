"""Stage 1, base rootfs: mmdebstrap of the recipe's package set, then a customize script inside it.

In: the recipe, the customize script and (the guest) a folder of files synced into the root once the essential
packages are in, before the others are installed (so their postinsts, update-initramfs and the script see them). Out: `<entry>/root` (the tree) and `<entry>/boot/{vmlinuz,initrd.img}`. The node image and the test guest
both start here, with their own recipe and script.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from pvc.image.recipe import CUSTOMIZE_SCRIPT, Debian
from pvc.image.run import BuildError, Runner

STAGE = "base rootfs"


def mmdebstrap_argv(recipe: Debian, customize: Path, target: Path, overlay: Path | None = None) -> list[str]:
    """The mmdebstrap command line. `overlay`: a folder whose contents are synced into the root (owners and modes
    kept) after the essential packages and before the recipe's packages are installed: the initramfs is built with
    its settings, and `customize` can enable the units it holds."""
    argv = [
        "mmdebstrap",
        "--mode=root",
        f"--variant={recipe.variant}",
        "--include=" + ",".join(recipe.packages),
        '--aptopt=APT::Install-Recommends "false"',
        '--aptopt=Acquire::Retries "3"',
    ]
    argv += [f"--dpkgopt={rule}" for rule in recipe.dpkg_path_filters]
    argv += [f"--hook-dir={folder}" for folder in recipe.hook_dirs]
    if overlay is not None:
        argv.append(f"--essential-hook=sync-in {overlay} /")
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


def build(
    recipe: Debian, work: Path, runner: Runner, customize: Path = CUSTOMIZE_SCRIPT, overlay: Path | None = None
) -> dict:
    """Build the base tree into `work`. Returns plain facts for meta.json."""
    root = work / "root"
    runner.run(mmdebstrap_argv(recipe, customize, root, overlay))
    kernel, initrd = kernel_files(root)
    boot = work / "boot"
    boot.mkdir()
    shutil.copy2(kernel, boot / "vmlinuz")
    shutil.copy2(initrd, boot / "initrd.img")
    return {"kernel": kernel.name.removeprefix("vmlinuz-")}
