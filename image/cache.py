"""The build cache: one directory per stage result, named by its input key, created atomically.

Layout (`$PVC_IMAGE_CACHE`, default /var/cache/pvc-image):

    base/<key>/     root/ (the mmdebstrap tree), boot/{vmlinuz,initrd.img}, meta.json
    pydeps/<key>/   upper/ (overlay layer over base: the /opt/pvc venv with the PyPI dependencies), meta.json
    project/<key>/  upper/ (overlay layer over pydeps: this project, units, links), meta.json
    image/<key>/    the artefacts and manifest.json
    guest-base/<key>/  root/ (the test guest's mmdebstrap tree), boot/{vmlinuz,initrd.img}, meta.json
    guest/<key>/    pvc-guest.qcow2 and manifest.json (the test guest disk)
    tmp/            stage builds in progress; renamed into place when complete, removed when interrupted
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

from pvc.image.run import remove_tree

DEFAULT_CACHE = Path("/var/cache/pvc-image")
# Entries kept per stage when pruning (the newest by use); a base tree is about 2 GiB, an image about 2 GiB.
KEEP = {"base": 2, "pydeps": 3, "project": 3, "image": 2, "guest-base": 2, "guest": 2}


def cache_dir() -> Path:
    return Path(os.environ.get("PVC_IMAGE_CACHE") or DEFAULT_CACHE)


class Cache:
    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root else cache_dir()

    def entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def lookup(self, kind: str, key: str) -> dict | None:
        """The entry's meta.json when the entry is complete; its use time is refreshed for pruning."""
        meta = self.entry(kind, key) / "meta.json"
        if not meta.is_file():
            return None
        os.utime(self.entry(kind, key))
        return json.loads(meta.read_text())

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """One build at a time per cache directory."""
        self.root.mkdir(parents=True, exist_ok=True)
        with (self.root / "lock").open("w") as fh:
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                print(f"pvc-image: waiting for another build using {self.root}", flush=True)
                fcntl.flock(fh, fcntl.LOCK_EX)
            self.clean_tmp()
            yield

    def clean_tmp(self) -> None:
        """Remove what interrupted builds left (only called under the lock, so nothing else is building)."""
        tmp = self.root / "tmp"
        if tmp.is_dir():
            for child in tmp.iterdir():
                remove_tree(child)

    @contextlib.contextmanager
    def create(self, kind: str, key: str) -> Iterator[Path]:
        """A fresh directory to build the entry in; it becomes the entry only if the block completes."""
        work = self.root / "tmp" / f"{kind}-{key[:16]}-{os.getpid()}"
        remove_tree(work)
        work.mkdir(parents=True)
        try:
            yield work
            final = self.entry(kind, key)
            final.parent.mkdir(parents=True, exist_ok=True)
            remove_tree(final)
            work.rename(final)
        finally:
            remove_tree(work)

    @staticmethod
    def write_meta(work: Path, meta: dict) -> None:
        """Written last inside `create`: an entry without meta.json is never used."""
        (work / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")

    def prune(self, kind: str, keep_keys: set[str]) -> None:
        """Keep the newest entries of a stage (and always `keep_keys`), remove the rest."""
        folder = self.root / kind
        if not folder.is_dir():
            return
        entries = sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime, reverse=True)
        kept = 0
        for path in entries:
            if path.name in keep_keys or kept < KEEP[kind]:
                kept += 1
                continue
            remove_tree(path)


def now() -> float:
    return time.monotonic()
