"""The lab's supervisor: joins the lab's network namespace (not its mount namespace: nspawn needs the host's
/sys/fs/cgroup, which `ip netns exec` would hide), holds one simulated BMC per node (real IPMI over lanplus,
pyghmi's BMC server, reachable by ipmitool from the nodes and the host) whose power commands start and hard-stop
that node, and records power state in the lab folder.

    python -m pvc.installer.labsupervisor LABDIR NODE
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import pyghmi.ipmi.bmc as bmc

from pvc.installer.labcontainer import Container, NodeSpec

REBOOT_EXIT = 133  # systemd-nspawn's exit status when the container asked for a reboot


class NodeBmc(bmc.Bmc):
    def __init__(
        self, sup: Supervisor, container: Container, user: str, password: str, address: str, port: int
    ) -> None:
        self.sup, self.container = sup, container
        self.lock = threading.Lock()
        super().__init__({user: password}, port=port, address=address)

    def get_power_state(self) -> str:
        return "on" if self.container.running() else "off"

    def power_on(self) -> None:
        with self.lock:
            self.container.start()
        self.sup.record(f"{self.container.spec.name}: power on")

    def power_off(self) -> None:
        with self.lock:
            self.container.power_off()
        self.sup.record(f"{self.container.spec.name}: power off")

    def power_shutdown(self) -> None:
        self.power_off()

    def power_reset(self) -> None:
        self.power_off()
        self.power_on()

    def power_cycle(self) -> None:
        self.power_reset()


def make_machine(lab: dict, node: dict):  # type: ignore[no-untyped-def]  # Container | labvm.VmNode
    """The backend's object for one node: start() / running() / power_off() / init_pid() / proc."""
    if lab["backend"] == "vm":
        from pvc.installer.labvm import VmNode

        return VmNode(lab, node)
    spec = NodeSpec(
        name=node["name"],
        netns=node["netns"],
        root=lab["root"],
        console_log=node["console_log"],
        binds=[tuple(b) for b in node["binds"]],
    )
    return Container(spec)


class Supervisor:
    """One node's power: its BMC and its machine. One process per node (pyghmi's server keeps global session
    state, and one stuck handler must not take every node's BMC with it)."""

    def __init__(self, labdir: Path, name: str) -> None:
        self.labdir = labdir
        self.lab = json.loads((labdir / "lab.json").read_text())
        node = next(n for n in self.lab["nodes"] if n["name"] == name)
        self.name = name
        b = node["bmc"]
        self.bmc = NodeBmc(self, make_machine(self.lab, node), b["username"], b["password"], b["address"], b["port"])

    def record(self, event: str = "") -> None:
        machine = self.bmc.container
        state = {
            "power": self.bmc.get_power_state(),
            "nspawn_pid": machine.proc.pid if machine.running() else None,
            "init_pid": machine.init_pid(),
            "updated": time.time(),
        }
        path = power_file(self.labdir, self.name)
        tmp = path.with_name("." + path.name)
        tmp.write_text(json.dumps(state))
        tmp.replace(path)
        if event:
            print(f"{time.strftime('%H:%M:%S')} {event}", flush=True)

    def run(self) -> None:
        threading.Thread(target=self.bmc.listen, daemon=True).start()
        self.bmc.power_on()
        while True:  # a node that rebooted from inside, and its init PID once it exists
            time.sleep(1)
            proc = self.bmc.container.proc
            if proc is not None and proc.poll() == REBOOT_EXIT:
                with self.bmc.lock:
                    self.bmc.container.proc = None
                    self.bmc.container.start()
                self.record(f"{self.name}: rebooted")
            self.record()

    def stop(self) -> None:
        self.bmc.container.power_off()
        self.record(f"{self.name}: powered off (lab down)")


def power_file(labdir: Path, name: str) -> Path:
    return labdir / name / "power.json"


def main() -> None:
    from pyroute2 import netns

    labdir, name = Path(sys.argv[1]), sys.argv[2]
    netns.setns(json.loads((labdir / "lab.json").read_text())["lab_ns"])  # the BMC listens on the lab's network
    sup = Supervisor(labdir, name)

    def end(*_: object) -> None:
        sup.stop()
        os._exit(0)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    sup.run()


if __name__ == "__main__":
    main()
