"""Where the example cluster.toml files are: production examples in examples/, the lab's in its package data."""

from __future__ import annotations

from pathlib import Path

from pvc.config.load import load
from pvc.config.schema import ClusterFile
from pvc.installer.lab.state import CONFIG_DIR

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
LAB_CONFIGS = CONFIG_DIR
NAMES = ["production-3node", "production-5node", "lab-3node", "lab-1node", "lab-vm-1node", "lab-vm-3node"]


def example(name: str) -> Path:
    """The example NAME.toml (production-3node, lab-1node, lab-vm-3node, ...), wherever it lives."""
    for folder in (EXAMPLES, LAB_CONFIGS):
        path = folder / f"{name}.toml"
        if path.exists():
            return path
    raise FileNotFoundError(f"no example {name}.toml in {EXAMPLES} or {LAB_CONFIGS}")


def example_cluster(name: str) -> ClusterFile:
    """The example NAME.toml, loaded (test_config_checks.py::test_examples_are_valid checks that each one is valid)."""
    result = load(example(name))
    assert result.config is not None, [p.format(name) for p in result.errors]
    return result.config


def example_join_key(name: str) -> str:
    """The join key of the example NAME.toml (the lab's are inline; a production example's names a file)."""
    from pvc.config.secrets import read_join_key

    path = example(name)
    return read_join_key(example_cluster(name), path.parent)
