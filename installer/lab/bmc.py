"""A simulated BMC: pyghmi's IPMI lanplus server, reached by the real ipmitool, whose chassis power commands
start and hard-stop a machine. The lab's supervisor holds one per node; the component tests' simulated servers
(tests/harness/server.py) use the same class around their processes."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Protocol

import pyghmi.ipmi.bmc as bmc


class Powered(Protocol):
    """What a BMC switches: start() powers on (idempotent), power_off() is a hard power-off."""

    def start(self) -> object: ...

    def power_off(self) -> None: ...

    def running(self) -> bool: ...


class SimulatedBmc(bmc.Bmc):  # type: ignore[misc]  # pyghmi has no types: its Bmc is Any to mypy
    def __init__(
        self,
        machine: Powered,
        user: str,
        password: str,
        address: str,
        port: int,
        on_event: Callable[[str], None] = lambda event: None,
    ) -> None:
        """`on_event` hears each power change ("power on", "power off") after it happened."""
        self.machine = machine
        self.on_event = on_event
        self.lock = threading.Lock()  # one power command at a time
        super().__init__({user: password}, port=port, address=address)

    def get_power_state(self) -> str:
        return "on" if self.machine.running() else "off"

    def power_on(self) -> None:
        with self.lock:
            self.machine.start()
        self.on_event("power on")

    def power_off(self) -> None:
        with self.lock:
            self.machine.power_off()
        self.on_event("power off")

    def power_shutdown(self) -> None:
        self.power_off()

    def power_reset(self) -> None:
        self.power_off()
        self.power_on()

    def power_cycle(self) -> None:
        self.power_reset()
