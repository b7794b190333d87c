"""The lab's `container` backend: one node = the image's root booted by systemd-nspawn (systemd as PID 1) in the
node's network namespace, on a per-node tmpfs overlay of the read-only squashfs (as live-boot does on hardware),
with loop devices as its disks, bound where a udev would have linked them.
"""

from __future__ import annotations

import contextlib
import os
import signal
from dataclasses import dataclass, field
from pathlib import Path

from pvc.installer.lab.machine import Machine


@dataclass(frozen=True)
class ContainerSpec:
    name: str
    netns: str
    root: str  # the mounted squashfs
    console_log: str
    binds: list[tuple[str, str]] = field(default_factory=list)  # (host path, path in the node)


def nspawn_argv(spec: ContainerSpec) -> list[str]:
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


class Container(Machine):
    """One node. nspawn starts inside the node's own network namespace: it mounts the node's /sys from the
    namespace it starts in, so anything else would show the node someone else's interfaces."""

    def __init__(self, spec: ContainerSpec) -> None:
        super().__init__(spec.name, spec.netns, spec.console_log)
        self.spec = spec

    def argv(self) -> list[str]:
        return nspawn_argv(self.spec)

    def init_pid(self) -> int | None:
        """PID (on the host) of the node's systemd."""
        proc = self.live()
        return None if proc is None else next(iter(children(proc.pid)), None)

    def power_off(self) -> None:
        """SIGKILL the node's init first, which ends its whole PID namespace at once, then nspawn."""
        init = self.init_pid()
        if init is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(init, signal.SIGKILL)
        super().power_off()
