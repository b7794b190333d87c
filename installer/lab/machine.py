"""What every lab backend's node is on the host: one process group, started inside a network namespace, its output
appended to the node's console log between `power on` / `power off` marks. The BMC (bmc.py) drives it."""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time

CLONE_NEWNET = 0x40000000
MARK = "=== pvc-lab:"  # a console log line the lab writes: "=== pvc-lab: power on 12:00:00 ==="
POWER_ON = f"{MARK} power on"


def enter_netns(name: str) -> None:
    """setns(2) into the named network namespace (Python 3.11 has no os.setns). Used in a child before exec: not
    `ip netns exec`, which would also remount /sys and hide the host's cgroup mounts."""
    fd = os.open(f"/run/netns/{name}", os.O_RDONLY)
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), f"setns into {name}")
    os.close(fd)


def mark(console_log: str, event: str) -> None:
    with open(console_log, "ab") as log:
        log.write(f"\n{MARK} {event} {time.strftime('%H:%M:%S')} ===\n".encode())


def since_power_on(console: str) -> str:
    """The part of a console log since the node was last powered on."""
    return console.rsplit(POWER_ON, 1)[-1]


class Machine:
    """A node's processes: `argv()` (the backend's) started in the node's network namespace; hard power-off."""

    def __init__(self, name: str, netns: str, console_log: str) -> None:
        self.name, self.netns, self.console_log = name, netns, console_log
        self.proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> int:
        if (proc := self.live()) is not None:
            return proc.pid
        mark(self.console_log, "power on")
        with open(self.console_log, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=lambda: enter_netns(self.netns),
            )
        return self.proc.pid

    def live(self) -> subprocess.Popen[bytes] | None:
        """The machine's process while it runs."""
        return self.proc if self.proc is not None and self.proc.poll() is None else None

    def running(self) -> bool:
        return self.live() is not None

    def init_pid(self) -> int | None:
        proc = self.live()
        return None if proc is None else proc.pid

    def power_off(self) -> None:
        """Hard power-off: SIGKILL the whole process group."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        mark(self.console_log, "power off")
        self.proc = None
