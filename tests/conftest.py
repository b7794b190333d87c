"""Shared test helpers. Component fixtures live in tests/component/conftest.py."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"


@pytest.fixture
def example_text():
    def read(name: str) -> str:
        return (EXAMPLES / f"{name}.toml").read_text()

    return read


def in_ci() -> bool:
    return os.environ.get("CI") == "true"
