"""A simulated server: the lab's simulated BMC (pvc.installer.lab.bmc: real IPMI, driven by the real ipmitool)
around the node's processes (libvirtd, pvcd). Power off SIGKILLs every process in the node's network namespace,
QEMU included; power on starts libvirtd and pvcd again.

Run inside the lab's switch namespace (where the BMC address lives):
    ip netns exec SWITCH python -m tests.harness.server SPEC.json
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pvc.installer.lab.bmc import SimulatedBmc
from tests.harness.netlab import kill_all_in


class ServerProcesses:
    """The processes of one simulated server, as its BMC powers them. Powering on returns at once (the BMC must
    answer); the processes start in the background, each once the previous one is ready."""

    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.netns = spec["netns"]
        self.powered = False
        self.lock = threading.Lock()
        self.children: list[subprocess.Popen] = []

    def running(self) -> bool:
        return self.powered

    def start(self) -> None:
        threading.Thread(target=self.boot, daemon=True).start()

    def boot(self) -> None:
        with self.lock:
            if self.powered:
                return
            self.powered = True
            for proc in self.spec["processes"]:
                log = open(proc["log"], "ab")  # noqa: SIM115 - handed to the child
                child = subprocess.Popen(
                    ["ip", "netns", "exec", self.netns, *proc["argv"]],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    cwd=proc.get("cwd"),
                    start_new_session=True,
                )
                self.children.append(child)
                ready = proc.get("ready_path")
                deadline = time.monotonic() + 60
                while ready and not os.path.exists(ready) and time.monotonic() < deadline:
                    time.sleep(0.05)

    def power_off(self) -> None:
        with self.lock:
            self.powered = False
            kill_all_in(self.netns)
            for child in self.children:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    child.wait(5)
            self.children.clear()
            for ready in (p.get("ready_path") for p in self.spec["processes"]):
                if ready and os.path.exists(ready):
                    os.unlink(ready)


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    machine = ServerProcesses(spec)
    b = spec["bmc"]
    server = SimulatedBmc(
        machine, b["user"], b["password"], b["address"], b["port"], on_event=lambda e: print(f"BMC: {e}", flush=True)
    )

    def end(*_: object) -> None:
        machine.power_off()
        os._exit(0)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    if spec.get("power_on", True):
        machine.boot()
    print("BMC: listening", flush=True)
    server.listen()


if __name__ == "__main__":
    main()
