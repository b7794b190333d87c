"""Network namespaces for component tests: a switch namespace with one bridge per network, and one namespace
per node with a veth on each bridge. All addresses are TEST-NET ranges inside these namespaces."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from dataclasses import dataclass, field

from pvc.installer.lab.command import LabError, ip  # the lab's: a failure says which command and why


def netns_pids(netns: str) -> list[int]:
    return [int(p) for p in ip("netns", "pids", netns, check=False).stdout.split()]


def kill_all_in(netns: str, tries: int = 50) -> None:
    """SIGKILL every process in a network namespace (ours: we created it), until none is left."""
    for _ in range(tries):
        pids = netns_pids(netns)
        if not pids:
            return
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)


@dataclass
class Net:
    bridge: str  # bridge in the switch namespace
    prefix: str  # "192.0.2"
    device: str  # name of the interface inside each node namespace


@dataclass
class NetLab:
    prefix: str  # namespace name prefix, e.g. "pvct"
    nets: list[Net]
    nodes: list[str] = field(default_factory=list)

    @property
    def switch(self) -> str:
        return f"{self.prefix}sw"

    def ns(self, node: str) -> str:
        return f"{self.prefix}-{node}"

    def up(self, nodes: list[str], host_ids: dict[str, int]) -> None:
        self.down()
        ip("netns", "add", self.switch)
        ip("-n", self.switch, "link", "set", "lo", "up")
        for net in self.nets:
            ip("-n", self.switch, "link", "add", net.bridge, "type", "bridge")
            ip("-n", self.switch, "link", "set", net.bridge, "up")
        for node in nodes:
            self.nodes.append(node)
            ns = self.ns(node)
            ip("netns", "add", ns)
            ip("-n", ns, "link", "set", "lo", "up")
            for i, net in enumerate(self.nets):
                port = f"{node[:8]}-{i}"
                ip("-n", self.switch, "link", "add", port, "type", "veth", "peer", "name", net.device, "netns", ns)
                ip("-n", self.switch, "link", "set", port, "master", net.bridge, "up")
                ip("-n", ns, "addr", "add", f"{net.prefix}.{host_ids[node]}/24", "dev", net.device)
                ip("-n", ns, "link", "set", net.device, "up")

    def add_switch_address(self, net: Net, host: int) -> str:
        address = f"{net.prefix}.{host}"
        ip("-n", self.switch, "addr", "add", f"{address}/24", "dev", net.bridge)
        return address

    def set_link(self, node: str, up: bool) -> None:
        """Cut (or restore) every link of a node: a network partition."""
        for i, _net in enumerate(self.nets):
            ip("-n", self.switch, "link", "set", f"{node[:8]}-{i}", "up" if up else "down")

    def addresses(self, node: str, device: str) -> list[str]:
        out = ip("-n", self.ns(node), "-o", "-4", "addr", "show", "dev", device).stdout
        return [line.split()[3].split("/")[0] for line in out.splitlines()]

    def link_address(self, node: str, device: str) -> str:
        """A device's MAC address in a node's namespace."""
        return ip("-n", self.ns(node), "-o", "link", "show", "dev", device).stdout.split("link/ether ")[1].split()[0]

    def pids(self, node: str) -> list[int]:
        return netns_pids(self.ns(node))

    def down(self) -> None:
        existing = ip("netns", "list", check=False).stdout
        for line in existing.splitlines():
            name = line.split()[0] if line.split() else ""
            if name.startswith(self.prefix):
                kill_all_in(name)  # processes keep a namespace alive after its name is gone
                with contextlib.suppress(LabError):
                    ip("netns", "del", name)
        self.nodes.clear()
