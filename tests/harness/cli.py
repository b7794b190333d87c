"""Running the real `pvc` console script as an administrator would, with its own connection folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

PVC = Path(sys.executable).parent / "pvc"


class Cli:
    """Runs the real `pvc` with its own connection folder."""

    def __init__(self, folder: Path) -> None:
        self.env = {**os.environ, "PVC_CLIENT_DIR": str(folder)}
        self.env.pop("PVC_CONNECTION", None)

    def run(self, *args: str, stdin: str | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        res = subprocess.run(
            [str(PVC), *args], capture_output=True, text=True, env=self.env, input=stdin, timeout=timeout
        )
        assert "Traceback" not in res.stdout + res.stderr, res.stdout + res.stderr
        return res

    def ok(self, *args: str, timeout: float = 120) -> str:
        res = self.run(*args, timeout=timeout)
        assert res.returncode == 0, f"pvc {' '.join(args)} exited {res.returncode}: {res.stderr}"
        return res.stdout

    def json(self, *args: str) -> Any:  # whatever JSON `pvc` printed
        return json.loads(self.ok(*args, "--format", "json"))

    def fails(self, *args: str, stdin: str | None = None) -> str:
        """The one line `pvc` printed on stderr when it exited 1."""
        res = self.run(*args, stdin=stdin)
        assert res.returncode == 1, f"pvc {' '.join(args)} exited {res.returncode}: {res.stdout}{res.stderr}"
        lines = res.stderr.strip().splitlines()
        assert len(lines) == 1, res.stderr
        return lines[0]
