"""Run mypy on the product code under its import names, and on tests/ and bench/ (`python ci/typecheck.py [ARGS]`).

The folders map onto `pvc.*` through setuptools' package-dir (config-schema/ is pvc.config), which mypy cannot
read, and the editable install's import hook is invisible to it. So this script makes a tree of symlinks,
build/typecheck/pvc/<part> -> <folder>, from pyproject.toml's mapping (the one place it is written), points mypy
there (`mypy_path` in pyproject.toml's [tool.mypy], which holds every other setting), checks each part with
`-p pvc.<part>`, and writes mypy's report with the real folder names back in it: `config-schema/schema.py:12`,
never `build/typecheck/pvc/config/schema.py:12`. Extra arguments go to mypy.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path

from mypy import api

ROOT = Path(__file__).resolve().parents[1]
LINKS = ROOT / "build" / "typecheck"
EXTRA = ["tests", "bench"]  # packages at the top whose folder is their import name


def link_tree(mapping: dict[str, str]) -> dict[str, str]:
    """Make build/typecheck/<package as a path> -> <folder> for each entry; return link prefix -> folder prefix."""
    prefixes = {}
    for package, folder in mapping.items():
        link = LINKS.joinpath(*package.split("."))
        link.parent.mkdir(parents=True, exist_ok=True)
        target = os.path.relpath(ROOT / folder, link.parent)
        if not link.is_symlink() or os.readlink(link) != target:
            link.unlink(missing_ok=True)
            link.symlink_to(target, target_is_directory=True)
        prefixes[f"{link.relative_to(ROOT)}/"] = f"{folder}/"
    return prefixes


def main(argv: list[str]) -> int:
    mapping = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    prefixes = link_tree(mapping)
    os.chdir(ROOT)
    args = [a for package in [*mapping, *EXTRA] for a in ("-p", package)] + argv
    out, err, status = api.run(args)
    for prefix, folder in prefixes.items():
        out = out.replace(prefix, folder)
    sys.stdout.write(out)
    sys.stderr.write(err)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
