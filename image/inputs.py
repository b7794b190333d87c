"""Cache keys: what each stage is built from, hashed. Pure functions of the recipe and the files they name."""

from __future__ import annotations

import hashlib
import json
import os
import tomllib
from collections.abc import Iterable
from pathlib import Path

from pvc.image.recipe import Debian, GuestRecipe, Recipe

# Never part of a source hash: build debris and editor/VCS state.
IGNORED_DIRS = {"__pycache__", ".git", ".pytest_cache", ".ruff_cache", ".mypy_cache", ".hypothesis", "build", "dist"}
IGNORED_SUFFIXES = (".pyc", ".pyo", ".swp", "~")


def digest(data: object) -> str:
    """sha256 of the canonical JSON of `data`."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def _ignored(name: str) -> bool:
    return name in IGNORED_DIRS or name.endswith(".egg-info") or name.endswith(IGNORED_SUFFIXES)


def source_files(root: Path, entries: Iterable[str]) -> list[Path]:
    """The files under `root` named by `entries` (files or folders), sorted, without build debris."""
    found: list[Path] = []
    for entry in entries:
        path = root / entry
        if path.is_file():
            found.append(path)
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            dirnames[:] = sorted(d for d in dirnames if not _ignored(d))
            found.extend(Path(dirpath) / f for f in filenames if not _ignored(f))
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def hash_files(root: Path, entries: Iterable[str]) -> str:
    """One hash over the relative path, executable bit and content of every file: renames and chmod +x count."""
    h = hashlib.sha256()
    for path in source_files(root, entries):
        rel = path.relative_to(root).as_posix()
        mode = "x" if os.access(path, os.X_OK) else "-"
        h.update(f"{rel}\0{mode}\0".encode())
        h.update(hashlib.sha256(path.read_bytes()).digest())
    return h.hexdigest()


def project_dependencies(project: Path) -> list[str]:
    """`[project] dependencies` of the project's pyproject.toml, as written."""
    with (project / "pyproject.toml").open("rb") as fh:
        return list(tomllib.load(fh)["project"]["dependencies"])


def base_key(recipe: Debian, customize: bytes, stage: str = "base", **extra: str) -> str:
    """The base tree's key. `extra`: further inputs of a recipe's base stage (the guest's overlay hash, fstab)."""
    return digest(
        {
            **extra,
            "stage": stage,
            "version": recipe.version,
            "suites": recipe.suites,
            "sources": recipe.sources(),
            "variant": recipe.variant,
            "packages": sorted(set(recipe.packages)),
            "dpkg_path_filters": recipe.dpkg_path_filters,
            **({"hook_dirs": recipe.hook_dirs} if recipe.hook_dirs else {}),
            "customize": hashlib.sha256(customize).hexdigest(),
        }
    )


def pydeps_key(base: str, dependencies: Iterable[str], venv: str) -> str:
    return digest({"stage": "pydeps", "base": base, "dependencies": sorted(dependencies), "venv": venv})


def project_key(pydeps: str, sources_hash: str, recipe: Recipe) -> str:
    return digest(
        {
            "stage": "project",
            "pydeps": pydeps,
            "sources": sources_hash,
            "commands": recipe.commands,
            "units": recipe.enable_units,
        }
    )


def image_key(project: str, recipe: Recipe) -> str:
    return digest(
        {
            "stage": "image",
            "project": project,
            "compression": recipe.compression,
            "kernel_args": recipe.kernel_args,
            "grub_timeout": recipe.grub_timeout,
            "labels": [recipe.volume_label, recipe.iso_label],
        }
    )


def guest_base_key(recipe: GuestRecipe, customize: bytes, overlay_hash: str) -> str:
    """The guest's root tree: the Debian part, its customize script, its overlay files (`overlay_hash`) and fstab."""
    return base_key(recipe, customize, stage="guest-base", overlay=overlay_hash, fstab=recipe.fstab())


def guest_disk_key(base: str, recipe: GuestRecipe) -> str:
    """The guest disk: its root tree and everything that shapes the disk and its boot."""
    return digest(
        {
            "stage": "guest-disk",
            "base": base,
            "kernel_args": recipe.kernel_args,
            "root_label": recipe.root_label,
            "volume_label": recipe.volume_label,
            "grub_timeout": recipe.grub_timeout,
            "disk_mib": recipe.disk_mib,
            "esp_mib": recipe.esp_mib,
        }
    )
