"""Running the host commands the lab needs; a failure is a LabError saying which command and why."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path


class LabError(Exception):
    """A lab operation failed; the message says what and how to fix it."""


def sh(*argv: str, check: bool = True, input: str | None = None) -> str:
    out = subprocess.run(list(argv), capture_output=True, text=True, input=input)
    if check and out.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {(out.stderr or out.stdout).strip()}")
    return out.stdout


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    out = subprocess.run(["ip", *args], capture_output=True, text=True)
    if check and out.returncode != 0:
        raise LabError(f"ip {' '.join(args)}: {out.stderr.strip()}")
    return out


def spawn(argv: list[str], log: Path, preexec_fn: Callable[[], None] | None = None) -> subprocess.Popen[bytes]:
    """Start a long-lived process of the lab: in a session of its own (so `down` ends its whole group), its output
    appended to `log`, no stdin."""
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=preexec_fn,
        )
