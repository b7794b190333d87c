"""Benchmark: `pvc-image build` from an empty cache, after a Python change, and with nothing changed.

1. cold build: an empty temporary cache directory (mmdebstrap, PyPI, everything)
2. warm rebuild: one Python file of the project changed (in a copy of the source tree)   target ≤ 60 s
3. no-change rebuild: same inputs again, served from the cache                            target: seconds
4. squashfs size (zstd-3)                                                                 target ≤ 600 MB

Needs root and the host packages of ci/setup.sh. The temporary cache (about 6 GB) is removed afterwards unless
--keep. Prints a table and writes bench/results/image.json.

Run from the repository root:
    .venv/bin/python -m bench.image [--keep]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

from bench import report
from pvc.image.build import DEFAULT_PROJECT as ROOT
from pvc.image.build import Artifacts, build
from pvc.image.inputs import source_files
from pvc.image.recipe import Recipe
from pvc.image.run import remove_tree
from tests.harness.procs import end_on_signals

TARGET_WARM_S = 60.0
TARGET_SQUASHFS_MB = 600.0
TOUCHED = "cli/main.py"


def timed(label: str, **kwargs) -> tuple[float, Artifacts]:
    print(f"== {label}", flush=True)
    start = time.monotonic()
    arts = build(progress=lambda line: print(f"   {line}", flush=True), **kwargs)
    return time.monotonic() - start, arts


def main() -> None:
    end_on_signals()  # a killed or interrupted run still removes its 6 GB cache
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="keep the temporary cache and outputs")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pvc-bench-image-", dir="/var/tmp"))
    cache, out, src = work / "cache", work / "out", work / "src"
    for path in source_files(ROOT, Recipe().project_sources):
        dest = src / path.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, dest)
    common = {"out": out, "compression": "zstd", "cache_root": cache, "project_root": src}
    try:
        cold, arts = timed("cold build (empty cache)", **common)
        squashfs = arts.squashfs.stat().st_size
        doc = json.loads(arts.manifest.read_text())
        with (src / TOUCHED).open("a") as fh:
            fh.write("\n# bench.image: a Python-only change\n")
        warm, arts = timed(f"warm rebuild ({TOUCHED} changed)", **common)
        assert not arts.cached
        same, arts = timed("no-change rebuild", **common)
        assert arts.cached
    finally:
        if not args.keep:
            remove_tree(work)

    results = {
        "cold_build_s": round(cold, 1),
        "cold_stage_s": doc["build_seconds"],
        "warm_rebuild_s": round(warm, 1),
        "warm_target_s": TARGET_WARM_S,
        "no_change_rebuild_s": round(same, 1),
        "squashfs_bytes": squashfs,
        "squashfs_mb": round(squashfs / 1e6, 1),
        "squashfs_mib": round(squashfs / 2**20, 1),
        "squashfs_target_mb": TARGET_SQUASHFS_MB,
        "usb_image_bytes": doc["artifacts"]["pvc-usb.img"]["size"],
        "iso_bytes": doc["artifacts"]["pvc.iso"]["size"],
        "packages": len(doc["packages"]),
    }
    rows = [
        ("cold build (empty cache)", f"{cold:.1f} s", ""),
        *((f"  stage {k}", f"{v:.1f} s", "") for k, v in doc["build_seconds"].items()),
        (
            "warm rebuild (1 Python file)",
            f"{warm:.1f} s",
            f"≤ {TARGET_WARM_S:.0f} s " + ("ok" if warm <= TARGET_WARM_S else "MISSED"),
        ),
        ("no-change rebuild", f"{same:.1f} s", ""),
        (
            "squashfs (zstd-3)",
            f"{squashfs / 1e6:.0f} MB ({squashfs / 2**20:.0f} MiB)",
            f"≤ {TARGET_SQUASHFS_MB:.0f} MB " + ("ok" if squashfs / 1e6 <= TARGET_SQUASHFS_MB else "MISSED"),
        ),
        ("pvc-usb.img / pvc.iso", f"{results['usb_image_bytes'] / 1e6:.0f} / {results['iso_bytes'] / 1e6:.0f} MB", ""),
    ]
    print(report.table(["measure", "value", "target"], rows))
    report.write(results, report.default_out("image"))


if __name__ == "__main__":
    main()
