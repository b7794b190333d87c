"""The lab's `container` backend: one node = the image's root booted by systemd-nspawn (systemd as PID 1) in the
node's network namespace, on a per-node tmpfs overlay of the read-only squashfs (as live-boot does on hardware),
with loop devices as its disks, bound where a udev would have linked them.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class NodeSpec:
    name: str
    netns: str
    root: str  # the mounted squashfs
    console_log: str
    binds: list[tuple[str, str]] = field(default_factory=list)  # (host path, path in the node)


def nspawn_argv(spec: NodeSpec) -> list[str]:
    argv = [
        "systemd-nspawn",
        "--quiet",
        "--boot",
        f"--directory={spec.root}",
        "--volatile=overlay",
        f"--machine={spec.name}",
        "--register=no",
        "--keep-unit",
        f"--network-namespace-path=/run/netns/{spec.netns}",
        "--capability=all",
        "--private-users=no",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        "--console=read-only",
        "--setenv=SYSTEMD_LOG_COLOR=0",
    ]
    argv += [f"--bind={src}:{dst}" for src, dst in spec.binds]
    return argv


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            out += [int(x) for x in task.read_text().split()]
    return out


CLONE_NEWNET = 0x40000000


def enter_netns(fd: int) -> None:
    """setns(2) into the network namespace open at `fd` (Python 3.11 has no os.setns)."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns")


class Container:
    """One node. nspawn is started inside the node's own network namespace (setns in the child, not `ip netns
    exec`, which would remount /sys and hide the host's cgroup mounts): nspawn mounts the node's /sys from the
    namespace it starts in, so anything else would show the node someone else's interfaces."""

    def __init__(self, spec: NodeSpec) -> None:
        self.spec = spec
        self.proc: subprocess.Popen | None = None

    def start(self) -> int:
        if self.running():
            return self.proc.pid  # type: ignore[union-attr]
        log = open(self.spec.console_log, "ab")  # noqa: SIM115 - handed to the child
        log.write(f"\n=== pvc-lab: power on {time.strftime('%H:%M:%S')} ===\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            nspawn_argv(self.spec),
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=lambda: enter_netns(os.open(f"/run/netns/{self.spec.netns}", os.O_RDONLY)),
        )
        log.close()
        return self.proc.pid

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def init_pid(self) -> int | None:
        """PID (on the host) of the node's systemd."""
        if not self.running():
            return None
        for child in children(self.proc.pid):  # type: ignore[union-attr]
            return child
        return None

    def power_off(self) -> None:
        """Hard power-off: SIGKILL the node's init (which ends its whole PID namespace) and nspawn."""
        if self.proc is None:
            return
        init = self.init_pid()
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(10)
        with open(self.spec.console_log, "ab") as log:
            log.write(f"\n=== pvc-lab: power off {time.strftime('%H:%M:%S')} ===\n".encode())
        self.proc = None
