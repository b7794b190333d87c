"""manifest.json: what is in the image or the guest disk (Debian packages, Python packages), what it was built from
(input hashes), the artefacts (size, sha256) and how long each stage took. Pure functions, plus `sha256_file`."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

from pvc.image.recipe import Debian, GuestRecipe, Recipe

FORMAT = 1


def parse_dpkg_status(text: str) -> dict[str, str]:
    """{package: version} of the installed packages in a dpkg status file (multi-arch names keep no suffix)."""
    packages: dict[str, str] = {}
    for para in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in para.splitlines():
            if line and not line[0].isspace() and ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(packages.items()))


_DIST_INFO = re.compile(r"^(?P<name>.+?)-(?P<version>[^-]+)\.dist-info$")


def python_packages(site_packages: list[Path]) -> dict[str, str]:
    """{distribution: version} from the *.dist-info folders of the given site-packages folders."""
    found: dict[str, str] = {}
    for folder in site_packages:
        for entry in folder.glob("*.dist-info") if folder.is_dir() else ():
            m = _DIST_INFO.match(entry.name)
            if m:
                found[m["name"].replace("_", "-").lower()] = m["version"]
    return dict(sorted(found.items()))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(4 * 1024 * 1024):
            h.update(chunk)
    return h.hexdigest()


def debian_recipe(recipe: Debian) -> dict:
    """The Debian part of a recipe, as the manifest shows it."""
    return {
        "version": recipe.version,
        "suites": list(recipe.suites),
        "sources": recipe.sources(),
        "variant": recipe.variant,
        "requested_packages": list(recipe.packages),
        "dpkg_path_filters": list(recipe.dpkg_path_filters),
    }


def document(
    *,
    recipe: dict,
    inputs: dict[str, str],
    key: str,
    packages: dict[str, str],
    artifacts: dict[str, dict],
    stage_seconds: dict[str, float],
    kernel: str,
    built_at: str,
    **extra: object,
) -> str:
    """The manifest as JSON text. `inputs`: the cache key of each stage; `key` (the last stage's) hashes them all."""
    doc = {
        "format": FORMAT,
        "built_at": built_at,
        "inputs_sha256": key,
        "stage_keys": inputs,
        "recipe": recipe,
        "kernel": kernel,
        "artifacts": dict(sorted(artifacts.items())),
        "build_seconds": {k: round(v, 1) for k, v in stage_seconds.items()},
        "packages": packages,
        **extra,
    }
    return json.dumps(doc, indent=2) + "\n"


def render(
    *,
    recipe: Recipe,
    inputs: dict[str, str],
    packages: dict[str, str],
    python: dict[str, str],
    artifacts: dict[str, dict],
    stage_seconds: dict[str, float],
    kernel: str,
    built_at: str,
) -> str:
    """The node image's manifest. `inputs`: the cache key of each stage; `inputs["image"]` hashes all of them."""
    return document(
        recipe={**debian_recipe(recipe), "kernel_args": recipe.kernel_args, "compression": recipe.compression},
        inputs=inputs,
        key=inputs["image"],
        packages=packages,
        artifacts=artifacts,
        stage_seconds=stage_seconds,
        kernel=kernel,
        built_at=built_at,
        python_packages=python,
    )


def guest_recipe(recipe: GuestRecipe) -> dict:
    """The guest recipe as the guest disk's manifest shows it (see `document`)."""
    return {**debian_recipe(recipe), "kernel_args": recipe.kernel_args, "disk_mib": recipe.disk_mib}
