"""Driving `pvc-lab` from the system tests and benches: the real command, run as a subprocess with the test's own lab folder,
namespace prefix and API port, and testinfra hosts whose commands go through `pvc-lab ssh NODE`."""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from testinfra.backend.base import CommandResult
from testinfra.backend.local import LocalBackend
from testinfra.host import Host

from pvc.installer.lab.machine import since_power_on

T = TypeVar("T")

BIN = Path(sys.executable).parent


def wait(what: str, check: Callable[[], T | None], timeout: float, interval: float = 2.0) -> T:
    """Poll `check` until it returns something truthy; AssertionError naming `what` (and the last answer) else. A
    check that fails (an assertion, a node or command that does not answer) is asked again."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (AssertionError, ValueError, KeyError, OSError, subprocess.TimeoutExpired) as exc:
            last = exc
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


class Lab:
    def __init__(self, labdir: Path, ns: str, api_port: int, client_dir: Path) -> None:
        self.labdir, self.ns, self.api_port = labdir, ns, api_port
        self.env = {
            **os.environ,
            "PVC_LAB_DIR": str(labdir),
            "PVC_LAB_NS": ns,
            "PVC_CLIENT_DIR": str(client_dir),
        }

    def run(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        out = subprocess.run(
            [str(BIN / "pvc-lab"), *args], capture_output=True, text=True, timeout=timeout, env=self.env
        )
        if check and out.returncode != 0:
            raise AssertionError(f"pvc-lab {' '.join(args)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
        return out

    def sh(self, node: str, command: str, timeout: float = 120, check: bool = True) -> str:
        out = self.run("ssh", node, "--", "/bin/sh", "-c", command, timeout=timeout, check=False)
        if check and out.returncode != 0:
            raise AssertionError(f"on {node}: {command}: exit {out.returncode}\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def json(self, node: str, command: str) -> Any:
        return json.loads(self.sh(node, command))

    def pvc(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`pvc -c lab ARGS`: the connection `pvc-lab up` registered."""
        return self.pvc_raw("-c", "lab", *args, timeout=timeout)

    def pvc_raw(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """`pvc ARGS` with the lab's connection folder."""
        return subprocess.run([str(BIN / "pvc"), *args], capture_output=True, text=True, timeout=timeout, env=self.env)

    def api_json(self, *args: str, timeout: float = 90) -> Any:
        """A `pvc -c lab ... --format json` answer; retried while the API moves to a new primary (seconds)."""

        def answer() -> tuple[Any]:
            out = self.pvc(*args, "--format", "json")
            assert out.returncode == 0, out.stderr
            return (json.loads(out.stdout),)  # a one-tuple: an empty answer ([] or {}) is an answer too

        return self.wait(f"pvc {' '.join(args)}", answer, timeout, interval=1.0)[0]

    def status(self) -> dict:
        return json.loads(self.run("status", "--format", "json").stdout)

    def console(self, node: str) -> str:
        return (self.labdir / node / "console.log").read_text(errors="replace")

    def since_power_on(self, node: str) -> str:
        return since_power_on(self.console(node))

    def wait(self, what: str, check: Callable[[], T | None], timeout: float, interval: float = 2.0) -> T:
        return wait(what, check, timeout, interval)

    def host(self, node: str) -> Host:
        return Host(LabBackend(self, node))


@contextlib.contextmanager
def running(squashfs: Path, labdir: Path, ns: str, api_port: int, client_dir: Path) -> Iterator[Lab]:
    """A 3-node container lab of the image for a test module: up (after removing one an interrupted run left), then
    down, whatever happened."""
    lab = Lab(labdir, ns, api_port, client_dir)
    lab.run("down", check=False)
    try:
        out = lab.run(
            "up",
            "--nodes",
            "3",
            "--squashfs",
            str(squashfs),
            "--api-port",
            str(api_port),
            "--timeout",
            "600",
            timeout=700,
        )
        print(out.stdout)
        yield lab
    finally:
        print(lab.run("down", check=False).stdout)


class LabBackend(LocalBackend):  # type: ignore[misc]  # testinfra has no types: LocalBackend is Any to mypy
    """testinfra commands run on a lab node through `pvc-lab ssh NODE -- /bin/sh -c COMMAND`."""

    def __init__(self, lab: Lab, node: str) -> None:
        super().__init__()
        self.lab, self.node = lab, node

    def run(self, command: str, *args: str, **kwargs: Any) -> CommandResult:
        cmd = self.get_command(command, *args)
        wrapped = " ".join(shlex.quote(a) for a in [str(BIN / "pvc-lab"), "ssh", self.node, "--", "/bin/sh", "-c", cmd])
        env_prefix = " ".join(f"{k}={shlex.quote(v)}" for k, v in self.lab.env.items() if k.startswith("PVC_"))
        return self.run_local(f"env {env_prefix} {wrapped}")
