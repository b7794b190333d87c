"""A simulated server: the lab's simulated BMC (pvc.installer.lab.bmc: real IPMI, driven by the real ipmitool)
around the node's processes (libvirtd, pvcd). Power off SIGKILLs every process in the node's network namespace,
QEMU included; power on starts libvirtd and pvcd again.

For a process whose spec names a `notify` socket it also plays systemd's part: the process gets NOTIFY_SOCKET, every
message it sends is logged (time and text) to `notify_log`, and with `watchdog_sec` a process that sends no
`WATCHDOG=1` for that long is killed and started again (WatchdogSec with Restart=always). SIGUSR1 kills and restarts
the process named "pvcd" (systemd restarting a crashed pvcd).

Run inside the lab's switch namespace (where the BMC address lives):
    ip netns exec SWITCH python -m tests.harness.server SPEC.json
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
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
        self.lock = threading.RLock()
        self.children: dict[str, subprocess.Popen] = {}
        self.started: dict[str, float] = {}  # process name -> when it was last started (monotonic)
        for proc in spec["processes"]:
            if proc.get("notify"):
                threading.Thread(target=self._notifications, args=(proc,), daemon=True).start()

    def running(self) -> bool:
        return self.powered

    def start(self) -> None:
        threading.Thread(target=self.boot, daemon=True).start()

    def _spawn(self, proc: dict) -> None:
        env = None
        if proc.get("notify"):
            env = {**os.environ, "NOTIFY_SOCKET": proc["notify"]}
            if proc.get("watchdog_sec"):
                env["WATCHDOG_USEC"] = str(int(proc["watchdog_sec"] * 1_000_000))
        log = open(proc["log"], "ab")  # noqa: SIM115 - handed to the child
        self.children[proc["name"]] = subprocess.Popen(
            ["ip", "netns", "exec", self.netns, *proc["argv"]],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=proc.get("cwd"),
            env=env,
            start_new_session=True,
        )
        self.started[proc["name"]] = time.monotonic()

    def boot(self) -> None:
        with self.lock:
            if self.powered:
                return
            self.powered = True
            for proc in self.spec["processes"]:
                self._spawn(proc)
                ready = proc.get("ready_path")
                deadline = time.monotonic() + 60
                while ready and not os.path.exists(ready) and time.monotonic() < deadline:
                    time.sleep(0.05)

    def restart(self, name: str, why: str) -> None:
        """Kill one process (SIGKILL, its whole session) and start it again, if the server is powered."""
        with self.lock:
            proc = next(p for p in self.spec["processes"] if p["name"] == name)
            child = self.children.get(name)
            if not self.powered or child is None:
                return
            print(f"SERVER: restarting {name}: {why}", flush=True)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                child.wait(10)
            self._spawn(proc)

    def _notifications(self, proc: dict) -> None:
        """systemd's side of sd_notify for one process: log what it says, and enforce its watchdog."""
        path = proc["notify"]
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(0.2)
        last_ping = time.monotonic()
        with open(proc["notify_log"], "a") as log:
            while True:
                try:
                    message = sock.recv(4096).decode(errors="replace")
                    log.write(f"{time.time():.3f} {message.replace(chr(10), ' ')}\n")
                    log.flush()
                    if "WATCHDOG=1" in message.split("\n"):
                        last_ping = time.monotonic()
                except TimeoutError:
                    pass
                limit = proc.get("watchdog_sec")
                with self.lock:
                    child = self.children.get(proc["name"])
                    alive = self.powered and child is not None and child.poll() is None
                    last_ping = max(last_ping, self.started.get(proc["name"], 0.0))
                    if alive and limit and time.monotonic() - last_ping > limit:
                        log.write(f"{time.time():.3f} watchdog: no WATCHDOG=1 for {limit}s, restarting\n")
                        log.flush()
                        self.restart(proc["name"], "watchdog timeout")
                        last_ping = time.monotonic()

    def power_off(self) -> None:
        with self.lock:
            self.powered = False
            kill_all_in(self.netns)
            for child in self.children.values():
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

    def restart_pvcd(*_: object) -> None:
        threading.Thread(target=machine.restart, args=("pvcd", "asked to (SIGUSR1)"), daemon=True).start()

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    signal.signal(signal.SIGUSR1, restart_pvcd)
    if spec.get("power_on", True):
        machine.boot()
    print("BMC: listening", flush=True)
    server.listen()


if __name__ == "__main__":
    main()
