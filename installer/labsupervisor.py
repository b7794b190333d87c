"""The lab's supervisor: joins the lab's network namespace (not its mount namespace: nspawn needs the host's
/sys/fs/cgroup, which `ip netns exec` would hide), holds one simulated BMC per node (real IPMI over lanplus,
pyghmi's BMC server, reachable by ipmitool from the nodes and the host) whose power commands start and hard-stop
that node, and records power state in the lab folder.

    python -m pvc.installer.labsupervisor LABDIR
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
    def __init__(self, labdir: Path) -> None:
        self.labdir = labdir
        self.lab = json.loads((labdir / "lab.json").read_text())
        self.bmcs: dict[str, NodeBmc] = {}
        for node in self.lab["nodes"]:
            machine = make_machine(self.lab, node)
            b = node["bmc"]
            self.bmcs[node["name"]] = NodeBmc(self, machine, b["username"], b["password"], b["address"], b["port"])

    def record(self, event: str = "") -> None:
        state = {
            name: {
                "power": bmc_.get_power_state(),
                "nspawn_pid": bmc_.container.proc.pid if bmc_.container.running() else None,
                "init_pid": bmc_.container.init_pid(),
            }
            for name, bmc_ in self.bmcs.items()
        }
        tmp = self.labdir / ".power.json"
        tmp.write_text(json.dumps({"updated": time.time(), "nodes": state, "event": event}))
        tmp.replace(self.labdir / "power.json")
        if event:
            print(f"{time.strftime('%H:%M:%S')} {event}", flush=True)

    def run(self) -> None:
        for bmc_ in self.bmcs.values():
            threading.Thread(target=bmc_.listen, daemon=True).start()
        for bmc_ in self.bmcs.values():
            bmc_.power_on()
        while True:  # nodes that rebooted or powered themselves off from inside, and init PIDs once they exist
            time.sleep(1)
            for name, bmc_ in self.bmcs.items():
                proc = bmc_.container.proc
                if proc is not None and proc.poll() == REBOOT_EXIT:
                    with bmc_.lock:
                        bmc_.container.proc = None
                        bmc_.container.start()
                    self.record(f"{name}: rebooted")
            self.record()

    def stop(self) -> None:
        for bmc_ in self.bmcs.values():
            bmc_.container.power_off()
        self.record("lab down: every node powered off")


def main() -> None:
    from pyroute2 import netns

    labdir = Path(sys.argv[1])
    netns.setns(json.loads((labdir / "lab.json").read_text())["lab_ns"])  # the BMCs listen on the lab's network
    sup = Supervisor(labdir)

    def end(*_: object) -> None:
        sup.stop()
        os._exit(0)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    sup.run()


if __name__ == "__main__":
    main()
