"""pvcd and the API's gunicorn config refuse a bad setup with one line, before touching any service."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.harness.examples import example

BIN = Path(sys.executable).parent


def config_without_key_file(tmp_path: Path) -> Path:
    text = (example("lab-3node")).read_text()
    lines = [('join_key_file = "missing.key"' if line.startswith("join_key =") else line) for line in text.splitlines()]
    path = tmp_path / "cluster.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_pvcd_names_the_unreadable_join_key_file(tmp_path):
    cfg = config_without_key_file(tmp_path)
    out = subprocess.run(
        [str(BIN / "pvcd"), "--config", str(cfg), "--node", "node1"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert (
        out.stderr.strip()
        == f"pvcd: cluster.join_key_file: cannot read '{tmp_path}/missing.key': No such file or directory"
    )


def test_pvcd_refuses_an_unknown_node_and_an_invalid_file(tmp_path):
    out = subprocess.run(
        [str(BIN / "pvcd"), "--config", str(example("lab-3node")), "--node", "node9"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 1 and "no node 'node9'" in out.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text("schema = 2\n")
    out = subprocess.run(
        [str(BIN / "pvcd"), "--config", str(bad), "--node", "n1"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 1 and "unsupported schema version 2" in out.stderr and "Traceback" not in out.stderr


def test_api_config_names_the_unreadable_join_key_file(tmp_path):
    cfg = config_without_key_file(tmp_path)
    env = {**os.environ, "PVC_CONFIG": str(cfg)}
    out = subprocess.run(
        [sys.executable, "-c", "import pvc.api.gunicorn"], capture_output=True, text=True, env=env, timeout=60
    )
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "pvc-api: cluster.join_key_file: cannot read" in out.stderr
