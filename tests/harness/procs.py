"""Child processes for tests and benches: started in the foreground, logged to a file, ended by PID.

Every `Proc` still running when the interpreter exits is ended (atexit), and `end_on_signals()` turns SIGTERM and
SIGHUP into KeyboardInterrupt, so `finally:` blocks and fixture teardowns run on those too: a failed or interrupted
run leaves no service behind for the next one to find.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

_LIVE: set[Proc] = set()


T = TypeVar("T")


def _end_all() -> None:
    for proc in list(_LIVE):
        with contextlib.suppress(Exception):
            proc.stop(timeout=5)


atexit.register(_end_all)


def end_on_signals() -> None:
    """SIGTERM and SIGHUP raise KeyboardInterrupt in the main thread, as Ctrl-C does, so cleanup code runs.

    Only in this process: a child forked from it without exec (pyroute2's NetNS helper, which its parent ends with
    SIGTERM) inherits the handler, and unwinding the parent's stack there would run the parent's `finally:` blocks
    and fixture teardowns in the child, removing what the parent still uses. Such a child just exits."""
    owner = os.getpid()

    def interrupt(signum: int, frame: object) -> None:
        if os.getpid() != owner:
            os._exit(128 + signum)
        raise KeyboardInterrupt

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)


def port_free(port: int, host: str = "127.0.0.1") -> None:
    """Refuse to start a service on a port something already listens on: a leftover service of an earlier run
    would otherwise answer in its place (with its old data)."""
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT is fine, LISTEN is not
        try:
            probe.bind((host, port))
        except OSError:
            raise RuntimeError(f"{host}:{port} is in use: is a service of another test run still running?") from None


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
        _LIVE.add(self)

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
        _LIVE.discard(self)

    def kill(self) -> None:
        self.stop(timeout=0.1, sig=signal.SIGKILL)

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_until(what: str, check: Callable[[], T], timeout: float, interval: float = 0.1, proc: Proc | None = None) -> T:
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


_PTRACE_INTERRUPT, _PTRACE_DETACH, _PTRACE_SEIZE = 0x4207, 17, 0x4206


def thread_id(pid: int, name: str) -> int:
    """The id of the thread of `pid` whose OS-level name (/proc/PID/task/TID/comm) is `name`."""
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            if (task / "comm").read_text().strip() == name[:15]:
                return int(task.name)
    raise LookupError(f"process {pid} has no thread named {name!r}")


def thread_names(pid: int, prefix: str) -> list[str]:
    """The OS-level names of the threads of `pid` that start with `prefix`."""
    names = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError):
            name = (task / "comm").read_text().strip()
            if name.startswith(prefix):
                names.append(name)
    return sorted(names)


@contextlib.contextmanager
def frozen_thread(pid: int, name: str) -> Iterator[int]:
    """Stop one thread of a running process (ptrace: seize, interrupt) while the block runs, as a thread blocked
    for ever would be; the process's other threads go on. Detaching (or the end of this process) resumes it."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
    tid = thread_id(pid, name)
    if libc.ptrace(_PTRACE_SEIZE, tid, None, None) != 0:
        raise OSError(ctypes.get_errno(), f"ptrace seize of thread {tid} ({name})")
    try:
        if libc.ptrace(_PTRACE_INTERRUPT, tid, None, None) != 0:
            raise OSError(ctypes.get_errno(), f"ptrace interrupt of thread {tid} ({name})")
        os.waitpid(tid, 0x40000000)  # __WALL: until it has stopped
        yield tid
    finally:
        libc.ptrace(_PTRACE_DETACH, tid, None, None)  # fails harmlessly when the thread is gone
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(tid, 0x40000000 | os.WNOHANG)
