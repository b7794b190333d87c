"""pvcd's watchdog: every controller reports progress; the main loop tells systemd it is alive (sd_notify
`WATCHDOG=1`, `WatchdogSec` in the unit) only while every controller made progress recently, and a primary whose
controllers stall steps down (election.py) before systemd restarts it.

A controller `beat()`s each time round its loop, saying how long its next step may take (by default
`timers.watchdog`); it is stalled once that time has passed without another beat. While the ZooKeeper connection is
lost, and for `timers.watchdog` after it returns, nothing counts as stalled: every call to ZooKeeper waits for the
connection (kazoo queues it), and restarting pvcd would not bring ZooKeeper back.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable

log = logging.getLogger(__name__)
_PR_SET_NAME = 15


class Progress:
    def __init__(self, bound: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.bound = bound
        self.clock = clock
        self._beats: dict[str, tuple[float, float]] = {}  # name -> (last beat, seconds its step may take)
        self._lock = threading.Lock()
        self._excused_until = 0.0

    def beat(self, name: str, allow: float | None = None) -> None:
        """`name` is alive now; its next step may take up to `allow` seconds (default: the bound)."""
        with self._lock:
            self._beats[name] = (self.clock(), self.bound if allow is None else max(allow, self.bound))

    def forget(self, name: str) -> None:
        """`name` ended on purpose (a fence worker that finished): no longer watched."""
        with self._lock:
            self._beats.pop(name, None)

    def excuse(self, seconds: float | None) -> None:
        """Judge no stall for `seconds` from now (None: until told otherwise)."""
        with self._lock:
            self._excused_until = float("inf") if seconds is None else self.clock() + seconds

    def stalled(self, names: Iterable[str] | None = None) -> dict[str, float]:
        """Controllers (all, or those in `names`) whose step takes longer than allowed: name -> seconds since their
        last beat."""
        now = self.clock()
        with self._lock:
            if now < self._excused_until:
                return {}
            wanted = set(self._beats) if names is None else set(names)
            return {
                name: round(now - at, 1)
                for name, (at, allow) in self._beats.items()
                if name in wanted and now - at > allow
            }


def sd_notify(message: str, env: dict[str, str] | None = None) -> bool:
    """Send `message` (READY=1, WATCHDOG=1, STATUS=...) to systemd's notification socket, if pvcd runs under one.
    Returns whether it was sent."""
    path = (env if env is not None else os.environ).get("NOTIFY_SOCKET", "")
    if not path:
        return False
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(path)
            sock.sendall(message.encode())
        return True
    except OSError as exc:
        log.debug("sd_notify %s: %s", message, exc)
        return False


def name_thread(name: str) -> None:
    """Give the calling thread its name at the OS level too (`top -H`, /proc/PID/task/TID/comm), 15 bytes."""
    with contextlib.suppress(Exception):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_NAME, ctypes.c_char_p(name.encode()[:15]), 0, 0, 0)


def controller_thread(name: str, target: Callable[[], None]) -> threading.Thread:
    """A daemon thread running `target`, named `name` in Python and at the OS level."""

    def run() -> None:
        name_thread(name)
        target()

    return threading.Thread(target=run, name=name, daemon=True)
