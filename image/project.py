"""Stage 3, project layer: this project as a wheel in /opt/pvc, its commands in /usr/local/bin, the rootfs overlay
files (units, drop-ins) copied in and its units enabled.

In: the base tree, the python deps layer and the project's source files. Out: `<entry>/upper`, an overlay layer.
The wheel is built from a copy of just the hashed source files, so build debris in the checkout never reaches it.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from pvc.image.inputs import source_files
from pvc.image.pydeps import CHROOT_ENV, PIP_FLAGS
from pvc.image.recipe import ROOTFS_OVERLAY, Recipe
from pvc.image.run import BuildError, Runner, chroot_mounts, overlay

STAGE = "project"


def build_wheel(project: Path, sources: tuple[str, ...], work: Path, runner: Runner) -> Path:
    tree, wheels = work / "src", work / "wheel"
    for path in source_files(project, sources):
        dest = tree / path.relative_to(project)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    runner.run([sys.executable, "-m", "pip", "wheel", "--no-deps", *PIP_FLAGS, "-w", wheels, tree])
    built = sorted(wheels.glob("pvc-*.whl"))
    if len(built) != 1:
        raise BuildError(STAGE, f"expected one pvc wheel in {wheels}, found {[p.name for p in built]}")
    return built[0]


def copy_overlay(src: Path, root: Path) -> list[str]:
    """Copy the files under `src` into `root` (modes kept, directories 0755). Returns the copied paths."""
    copied = []
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        dest = root / rel
        dest.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        shutil.copyfile(path, dest)
        os.chmod(dest, 0o755 if os.access(path, os.X_OK) else 0o644)
        copied.append("/" + rel.as_posix())
    return copied


def build(
    layers: list[Path], project: Path, recipe: Recipe, work: Path, runner: Runner, overlay_src: Path = ROOTFS_OVERLAY
) -> dict:
    wheel = build_wheel(project, recipe.project_sources, work, runner)
    upper, mnt = work / "upper", work / "mnt"
    with overlay(runner, layers, mnt, upper=upper, work=work / "ovl"), chroot_mounts(runner, mnt):
        chroot: list[str | Path] = ["chroot", mnt, *CHROOT_ENV]
        (mnt / "tmp/pvc-wheel").mkdir(parents=True)
        shutil.copy2(wheel, mnt / "tmp/pvc-wheel" / wheel.name)
        pip = [f"{recipe.venv}/bin/python", "-m", "pip", "install", "--no-deps", "--no-index", *PIP_FLAGS]
        runner.run([*chroot, *pip, f"/tmp/pvc-wheel/{wheel.name}"])
        shutil.rmtree(mnt / "tmp/pvc-wheel")
        bindir = mnt / "usr/local/bin"
        for name in recipe.commands:
            if not (mnt / recipe.venv.lstrip("/") / "bin" / name).exists():
                raise BuildError(STAGE, f"the wheel installed no {recipe.venv}/bin/{name}")
            link = bindir / name
            if link.is_symlink() or link.exists():
                link.unlink()
            link.symlink_to(f"{recipe.venv}/bin/{name}")
        copied = copy_overlay(overlay_src, mnt)
        runner.run([*chroot, "systemctl", "enable", *recipe.enable_units])
        # Smoke test inside the root: the installed project imports and its CLI runs.
        runner.run([*chroot, "/usr/local/bin/pvc", "--help"])
    return {"wheel": wheel.name, "overlay_files": copied}
