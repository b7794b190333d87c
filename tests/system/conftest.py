"""Fixtures for the system tests: the built node image, which each module's lab fixture boots."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from pvc.image.build import DEFAULT_OUT, Artifacts, build
from pvc.image.guest import DEFAULT_OUT as GUEST_OUT
from pvc.image.guest import GuestArtifacts, build_guest
from pvc.image.run import BuildError


def pytest_collection_modifyitems(items):
    for item in items:
        if "/system/" in str(item.fspath):
            item.add_marker(pytest.mark.system)


@pytest.fixture(scope="session")
def image() -> Artifacts:
    """The node image, built by `pvc.image.build.build` into build/image (or $PVC_IMAGE_OUT).

    Cached under $PVC_IMAGE_CACHE (default /var/cache/pvc-image): seconds when nothing changed, about a minute
    after a Python change, a few minutes from an empty cache.
    """
    out = Path(os.environ.get("PVC_IMAGE_OUT") or DEFAULT_OUT)
    try:
        return build(out, "zstd", progress=lambda line: print(f"pvc-image: {line}", flush=True))
    except BuildError as exc:
        pytest.fail(f"image build failed: {exc.stage}: {exc.message}\n{exc.log_tail}", pytrace=False)


@pytest.fixture(scope="session")
def guest_image() -> GuestArtifacts:
    """The test guest disk (`pvc-image guest`), built or reused from the cache into build/guest ($PVC_GUEST_OUT)."""
    out = Path(os.environ.get("PVC_GUEST_OUT") or GUEST_OUT)
    try:
        return build_guest(out, progress=lambda line: print(f"pvc-image guest: {line}", flush=True))
    except BuildError as exc:
        pytest.fail(f"guest build failed: {exc.stage}: {exc.message}\n{exc.log_tail}", pytrace=False)
