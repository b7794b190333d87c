"""Shared fixtures. Component fixtures live in tests/component/conftest.py; harnesses and helpers in tests/harness."""

from __future__ import annotations

import pytest

from tests.harness.examples import example
from tests.harness.procs import end_on_signals


def pytest_configure(config):
    end_on_signals()  # a SIGTERM'd run still tears its fixtures down: no service is left for the next run


@pytest.fixture
def example_text():
    def read(name: str) -> str:
        return example(name).read_text()

    return read
