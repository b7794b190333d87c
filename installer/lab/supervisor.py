"""A node's supervisor: joins the lab's network namespace (not its mount namespace: nspawn needs the host's
/sys/fs/cgroup, which `ip netns exec` would hide), holds the node's simulated BMC (bmc.py; reachable by ipmitool from
the nodes and the host) whose power commands start and hard-stop the node's machine, and records its power state in
the node's power.json.

    python -m pvc.installer.lab.supervisor LABDIR NODE
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path

from pvc.installer.lab import state
from pvc.installer.lab.bmc import SimulatedBmc
from pvc.installer.lab.container import Container, ContainerSpec
from pvc.installer.lab.machine import Machine
from pvc.installer.lab.state import Lab, LabNode, Power

REBOOT_EXIT = 133  # systemd-nspawn's exit status when the container asked for a reboot


def make_machine(lab: Lab, node: LabNode) -> Machine:
    """The backend's machine for one node."""
    if lab.backend == "vm":
        from pvc.installer.lab.vm import VmNode

        return VmNode(lab, node)
    spec = ContainerSpec(
        name=node.name, netns=node.netns, root=lab.root, console_log=node.console_log, binds=list(node.binds)
    )
    return Container(spec)


class Supervisor:
    """One node's power: its BMC and its machine. One process per node (pyghmi's server keeps global session
    state, and one stuck handler must not take every node's BMC with it)."""

    def __init__(self, labdir: Path, name: str) -> None:
        self.labdir = labdir
        self.lab = state.read(labdir)
        node = self.lab.node(name)
        self.name = name
        self.machine = make_machine(self.lab, node)
        b = node.bmc
        self.bmc = SimulatedBmc(
            self.machine, b.username, b.password, b.address, b.port, on_event=lambda e: self.record(f"{name}: {e}")
        )

    def record(self, event: str = "") -> None:
        machine = self.machine
        power = Power(
            power="on" if machine.running() else "off",
            nspawn_pid=machine.proc.pid if machine.proc is not None and machine.running() else None,
            init_pid=machine.init_pid(),
            updated=time.time(),
        )
        state.write_power(self.labdir, self.name, power)
        if event:
            print(f"{time.strftime('%H:%M:%S')} {event}", flush=True)

    def run(self) -> None:
        threading.Thread(target=self.bmc.listen, daemon=True).start()
        self.bmc.power_on()
        while True:  # a node that rebooted from inside, and its init PID once it exists
            time.sleep(1)
            proc = self.machine.proc
            if proc is not None and proc.poll() == REBOOT_EXIT:
                with self.bmc.lock:
                    self.machine.proc = None
                    self.machine.start()
                self.record(f"{self.name}: rebooted")
            self.record()

    def stop(self) -> None:
        self.machine.power_off()
        self.record(f"{self.name}: powered off (lab down)")


def main() -> None:
    from pyroute2 import netns

    labdir, name = Path(sys.argv[1]), sys.argv[2]
    netns.setns(state.read(labdir).lab_ns)  # the BMC listens on the lab's network
    sup = Supervisor(labdir, name)

    def end(*_: object) -> None:
        sup.stop()
        os._exit(0)

    signal.signal(signal.SIGTERM, end)
    signal.signal(signal.SIGINT, end)
    sup.run()


if __name__ == "__main__":
    main()
