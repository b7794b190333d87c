"""The build: five stages, each cached under its input key (see cache.py), each printing its progress.

    [1/5] base rootfs    mmdebstrap + customize           keyed by packages, suites, mirror, customize.sh, version
    [2/5] python deps    /opt/pvc venv + PyPI deps        keyed by base + [project] dependencies
    [3/5] project        wheel of this project + units    keyed by python deps + hash of the project's sources
    [4/5] squashfs       mksquashfs of the merged layers  keyed (with 5) by project + compression + boot settings
    [5/5] media          USB image, ISO, iPXE, manifest

`build()` is what the CLI, the lab and the tests call.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from pathlib import Path

from pvc.image import base, manifest, media, project, pydeps, squashfs
from pvc.image.cache import Cache
from pvc.image.inputs import base_key, hash_files, image_key, project_dependencies, project_key, pydeps_key
from pvc.image.recipe import CUSTOMIZE_SCRIPT, HERE, Recipe
from pvc.image.run import BuildError, Runner

STAGES = 5
DEFAULT_PROJECT = HERE.parent
DEFAULT_OUT = DEFAULT_PROJECT / "build" / "image"
ARTIFACTS = ("filesystem.squashfs", "vmlinuz", "initrd.img", "pvc-usb.img", "pvc.iso", "boot.ipxe", "manifest.json")
HOST_TOOLS = {
    "base rootfs": ["mmdebstrap", "chroot", "mount"],
    "squashfs": ["mksquashfs"],
    "media": ["grub-mkstandalone", "grub-mkrescue", "xorriso", "mkfs.vfat", "mcopy", "mmd", "syslinux", "sgdisk"],
}


@dataclass(frozen=True)
class Artifacts:
    """Paths of every artefact in the output directory, and whether the whole build came from the cache."""

    squashfs: Path
    kernel: Path
    initrd: Path
    usb: Path
    iso: Path
    ipxe: Path
    manifest: Path
    key: str
    cached: bool

    def paths(self) -> list[Path]:
        return [getattr(self, f.name) for f in fields(self) if f.type in ("Path", Path)]


Progress = Callable[[str], None]


class Stages:
    """Progress lines and cached stage results of one build (the node image's or the guest's)."""

    def __init__(self, cache: Cache, progress: Progress, total: int = STAGES) -> None:
        self.cache = cache
        self.progress = progress
        self.total = total
        self.seconds: dict[str, float] = {}
        self.start = time.monotonic()

    def say(self, n: int, stage: str, text: str) -> None:
        self.progress(f"[{n}/{self.total}] {stage}: {text}  (+{time.monotonic() - self.start:.1f} s)")

    def layer(self, n: int, kind: str, stage: str, key: str, what: str, make: Callable[[Path, Runner], dict]) -> Path:
        """The cache entry of one stage: reused when present, otherwise built with `make(work, runner)`."""
        meta = self.cache.lookup(kind, key)
        if meta is not None:
            self.seconds[kind] = meta.get("seconds", 0.0)
            self.say(n, stage, f"cached ({key[:12]})")
            return self.cache.entry(kind, key)
        self.say(n, stage, what)
        t0 = time.monotonic()
        with self.cache.create(kind, key) as work:
            runner = Runner(stage, work / "build.log")
            facts = make(work, runner)
            elapsed = time.monotonic() - t0
            self.cache.write_meta(work, {"key": key, "seconds": elapsed, **facts})
        self.seconds[kind] = elapsed
        self.say(n, stage, f"done in {elapsed:.1f} s")
        return self.cache.entry(kind, key)


def check_host(stages: list[str], tools: dict[str, list[str]] = HOST_TOOLS) -> None:
    if os.geteuid() != 0:
        raise BuildError("setup", "pvc-image needs root (mmdebstrap --mode=root, overlay mounts, chroot)")
    for stage in stages:
        for tool in tools.get(stage, []):
            if shutil.which(tool) is None:
                raise BuildError(stage, f"missing tool {tool!r}: install the host packages (ci/setup.sh)")


def publish(entry: Path, out: Path, names: tuple[str, ...] = ARTIFACTS) -> None:
    """Copy the cached artefacts to `out` (reflinks where the file system has them), unless already identical."""
    out.mkdir(parents=True, exist_ok=True)
    for name in names:
        src, dest = entry / name, out / name
        if dest.is_file() and name != "manifest.json":
            s, d = src.stat(), dest.stat()
            if (s.st_size, s.st_mtime_ns) == (d.st_size, d.st_mtime_ns):
                continue
        tmp = out / f".{name}.tmp"
        subprocess.run(["cp", "--reflink=auto", "--preserve=timestamps", str(src), str(tmp)], check=True)
        tmp.rename(dest)


def build(
    out: Path = DEFAULT_OUT,
    compression: str = "zstd",
    progress: Progress = print,
    *,
    cache_root: Path | None = None,
    project_root: Path = DEFAULT_PROJECT,
    recipe: Recipe | None = None,
) -> Artifacts:
    """Build (or reuse from the cache) the node image and put its artefacts in `out`. Raises `BuildError`."""
    recipe = replace(recipe or Recipe(), compression=compression)
    recipe.squashfs_options()  # validates the compression
    if not (project_root / "pyproject.toml").is_file():
        raise BuildError("setup", f"{project_root} is not the PVC source tree (no pyproject.toml)")
    out = Path(out).resolve()
    cache = Cache(cache_root)

    keys = {"base": base_key(recipe, CUSTOMIZE_SCRIPT.read_bytes())}
    deps = project_dependencies(project_root)
    keys["pydeps"] = pydeps_key(keys["base"], deps, recipe.venv)
    keys["project"] = project_key(keys["pydeps"], hash_files(project_root, recipe.project_sources), recipe)
    keys["image"] = image_key(keys["project"], recipe)

    check_host([])
    with cache.lock():
        st = Stages(cache, progress)
        image_entry = cache.entry("image", keys["image"])
        if cache.lookup("image", keys["image"]) is not None:
            progress(f"[{STAGES}/{STAGES}] image: cached ({keys['image'][:12]}), copying to {out}")
            publish(image_entry, out)
            progress(f"cached: image {keys['image'][:12]} in {out} ({time.monotonic() - st.start:.1f} s)")
            return _artifacts(out, keys["image"], cached=True)

        check_host(list(HOST_TOOLS))
        base_entry = st.layer(
            1,
            "base",
            base.STAGE,
            keys["base"],
            f"mmdebstrap {recipe.suite} with {len(recipe.packages)} packages (about 2-3 min)",
            lambda work, runner: base.build(recipe, work, runner),
        )
        base_root = base_entry / "root"
        deps_entry = st.layer(
            2,
            "pydeps",
            pydeps.STAGE,
            keys["pydeps"],
            f"venv {recipe.venv} + {len(deps)} PyPI dependencies",
            lambda work, runner: pydeps.build(base_root, deps, recipe.venv, work, runner),
        )
        lower = [deps_entry / "upper", base_root]
        project_entry = st.layer(
            3,
            "project",
            project.STAGE,
            keys["project"],
            f"wheel of {project_root} + units",
            lambda work, runner: project.build(lower, project_root, recipe, work, runner),
        )
        layers = [project_entry / "upper", *lower]

        def make_image(work: Path, runner: Runner) -> dict:
            t0 = time.monotonic()
            st.say(4, squashfs.STAGE, f"mksquashfs {' '.join(recipe.squashfs_options())}")
            runner.stage = squashfs.STAGE
            squashfs.build(layers, work / "filesystem.squashfs", recipe, work, runner)
            st.seconds["squashfs"] = time.monotonic() - t0
            st.say(4, squashfs.STAGE, f"done in {st.seconds['squashfs']:.1f} s")
            t0 = time.monotonic()
            st.say(5, media.STAGE, "USB image, ISO, iPXE script, manifest")
            runner.stage = media.STAGE
            for name in ("vmlinuz", "initrd.img"):
                shutil.copy2(base_entry / "boot" / name, work / name)
            files = {n: work / n for n in ("vmlinuz", "initrd.img", "filesystem.squashfs")}
            media.build(files, work, recipe, work / "media", runner)
            st.seconds["media"] = time.monotonic() - t0
            _write_manifest(work, recipe, keys, base_entry, layers, st.seconds)
            st.say(5, media.STAGE, f"done in {time.monotonic() - t0:.1f} s")
            return {}

        with cache.create("image", keys["image"]) as work:
            (work / "media").mkdir()
            make_image(work, Runner(squashfs.STAGE, work / "build.log"))
            shutil.rmtree(work / "media")
            cache.write_meta(work, {"key": keys["image"], "seconds": st.seconds})
        publish(image_entry, out)
        for kind in ("image", "project", "pydeps", "base"):
            cache.prune(kind, {keys[kind]})
        progress(f"built: image {keys['image'][:12]} in {out} ({time.monotonic() - st.start:.1f} s)")
        return _artifacts(out, keys["image"], cached=False)


def _write_manifest(
    work: Path, recipe: Recipe, keys: dict, base_entry: Path, layers: list[Path], seconds: dict[str, float]
) -> None:
    status = (base_entry / "root/var/lib/dpkg/status").read_text()
    sites = []
    for layer in reversed(layers):
        sites.extend(sorted((layer / recipe.venv.lstrip("/")).glob("lib/python3*/site-packages")))
    artifacts = {}
    for name in ARTIFACTS:
        path = work / name
        if name != "manifest.json":
            artifacts[name] = {"size": path.stat().st_size, "sha256": manifest.sha256_file(path)}
    meta = json.loads((base_entry / "meta.json").read_text())
    text = manifest.render(
        recipe=recipe,
        inputs=keys,
        packages=manifest.parse_dpkg_status(status),
        python=manifest.python_packages(sites),
        artifacts=artifacts,
        stage_seconds=seconds,
        kernel=meta.get("kernel", ""),
        built_at=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    )
    (work / "manifest.json").write_text(text)


def _artifacts(out: Path, key: str, cached: bool) -> Artifacts:
    return Artifacts(
        squashfs=out / "filesystem.squashfs",
        kernel=out / "vmlinuz",
        initrd=out / "initrd.img",
        usb=out / "pvc-usb.img",
        iso=out / "pvc.iso",
        ipxe=out / "boot.ipxe",
        manifest=out / "manifest.json",
        key=key,
        cached=cached,
    )
