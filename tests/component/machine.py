"""A simulated server: a BMC that speaks real IPMI (pyghmi's lanplus server, driven by the real ipmitool) and
the node's processes (libvirtd, pvcd) it powers. Power off SIGKILLs every process in the node's network
namespace, QEMU included; power on starts libvirtd and pvcd again.

Run inside the lab's switch namespace (where the BMC address lives):
    ip netns exec SWITCH python -m tests.component.machine SPEC.json
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

import pyghmi.ipmi.bmc as bmc

from tests.component.netlab import kill_all_in


class Machine(bmc.Bmc):
    def __init__(self, spec: dict) -> None:
        self.spec = spec
        self.netns = spec["netns"]
        self.powered = False
        self.lock = threading.Lock()
        self.children: list[subprocess.Popen] = []
        b = spec["bmc"]
        super().__init__({b["user"]: b["password"]}, port=b["port"], address=b["address"])

    # -- power ---------------------------------------------------------------------------------------------
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

    def halt(self) -> None:
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

    # -- IPMI handlers ---------------------------------------------------------------------------------------
    def get_power_state(self) -> str:
        return "on" if self.powered else "off"

    def power_off(self) -> None:
        print("BMC: power off", flush=True)
        self.halt()

    def power_shutdown(self) -> None:
        self.power_off()

    def power_on(self) -> None:
        print("BMC: power on", flush=True)
        threading.Thread(target=self.boot, daemon=True).start()

    def power_reset(self) -> None:
        self.halt()
        self.power_on()

    def power_cycle(self) -> None:
        self.power_reset()


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    machine = Machine(spec)

    def end(*_: object) -> None:
        machine.halt()
        os._exit(0)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    if spec.get("power_on", True):
        machine.boot()
    print("BMC: listening", flush=True)
    machine.listen()


if __name__ == "__main__":
    main()
