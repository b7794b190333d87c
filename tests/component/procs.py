"""Child processes for component tests: started in the foreground, logged to a file, ended by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path


class Proc:
    def __init__(
        self, name: str, argv: list[str], log: Path, env: dict[str, str] | None = None, cwd: str | None = None
    ):
        self.name = name
        self.argv = argv
        self.log = log
        log.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(log, "ab")  # noqa: SIM115 - lives as long as the process
        self.popen = subprocess.Popen(
            argv,
            stdout=self._fh,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=cwd,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 10.0, sig: int = signal.SIGTERM) -> None:
        """End this process (and its process group) by PID: `sig`, then SIGKILL after `timeout`."""
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait(10)
        self._fh.close()

    def kill(self) -> None:
        self.stop(timeout=0.1, sig=signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(
    what: str, check: Callable[[], object], timeout: float, interval: float = 0.1, proc: Proc | None = None
) -> object:
    """Poll `check` until it returns something truthy; fail with `what` (and the process log) on timeout."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the service may not be up yet
            last_exc = exc
        if proc is not None and not proc.alive():
            raise AssertionError(
                f"{proc.name} exited ({proc.popen.returncode}) while waiting for {what}:\n{proc.tail()}"
            )
        time.sleep(interval)
    detail = f" (last error: {last_exc!r})" if last_exc else ""
    log = f"\n{proc.name} log:\n{proc.tail()}" if proc else ""
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}{detail}{log}")
