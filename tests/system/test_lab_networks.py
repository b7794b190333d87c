"""Client networks in the 3-node container lab, with the real test guest (issue 13's system tests): two VMs on
different nodes get leases in the range, resolve each other by name and ping each other.

One lab and two guests serve the whole module: a managed network with NAT is added through `pvc network add`, the
guest image reaches the cluster through `pvc storage volume upload` (qcow2) and a snapshot clone per VM, and the two
VMs are defined through the typed model (`pvc vm define --nic`) on different nodes. The tests talk to the guests
through the QEMU guest agent (`guest-exec`, by `virsh qemu-agent-command` on the VM's node), which needs no network
of its own.

Run it under the heavy lock:
    flock /tmp/pvc-heavy.lock .venv/bin/python -m pytest tests/system/test_lab_networks.py
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.harness.labctl import Lab, running

NS = os.environ.get("PVC_LAB_NS", "pvcsys")
API_PORT = 17372
NODES = ("node1", "node2", "node3")
# The network's own domain: the default, <name>.<cluster domain>, ends in .invalid in the lab configs, which the
# guest's systemd-resolved never looks up (RFC 6761).
VNI, DOMAIN = 100, "lan.pvc.test"
SUBNET, GATEWAY, RANGE = "10.100.0.0/24", "10.100.0.1", ("10.100.0.100", "10.100.0.199")
HOME = {"vm1": "node2", "vm2": "node3"}  # different nodes
GUEST_TIMEOUT = 900  # two TCG boots at once inside the lab on a shared 2-core machine


def pvc_ok(lab: Lab, *args: str, timeout: float = 300) -> str:
    out = lab.pvc(*args, timeout=timeout)
    assert out.returncode == 0, f"pvc {' '.join(args)}: {out.stdout}\n{out.stderr}"
    return out.stdout


@dataclass
class Guests:
    lab: Lab

    def node_of(self, vm: str) -> str:
        return str(self.lab.api_json("vm", "info", vm)["running_on"])

    def agent(self, vm: str, command: dict, node: str | None = None) -> Any:
        """A guest agent command, through libvirt on the VM's node."""
        encoded = base64.b64encode(json.dumps(command).encode()).decode()
        out = self.lab.sh(
            node or self.node_of(vm),
            f'virsh -c qemu:///system qemu-agent-command {vm} "$(echo {encoded} | base64 -d)" --timeout 20',
            timeout=60,
        )
        return json.loads(out)["return"]

    def run(self, vm: str, script: str, timeout: float = 60) -> tuple[int, str]:
        """A shell script in the guest (guest-exec): its exit code and output."""
        node = self.node_of(vm)
        pid = self.agent(
            vm,
            {"execute": "guest-exec", "arguments": {"path": "/bin/sh", "arg": ["-c", script], "capture-output": True}},
            node,
        )["pid"]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.agent(vm, {"execute": "guest-exec-status", "arguments": {"pid": pid}}, node)
            if status["exited"]:
                out = base64.b64decode(status.get("out-data", "")).decode(errors="replace")
                err = base64.b64decode(status.get("err-data", "")).decode(errors="replace")
                return int(status.get("exitcode", -1)), out + err
            time.sleep(0.5)
        raise AssertionError(f"{vm}: {script!r} did not finish within {timeout:.0f} s")

    def ok(self, vm: str, script: str, timeout: float = 60) -> str:
        code, out = self.run(vm, script, timeout)
        assert code == 0, f"{vm}: {script!r} exited {code}: {out}"
        return out

    def address(self, vm: str) -> str:
        out = self.ok(vm, "ip -4 -o addr show scope global")
        addrs = [line.split()[3].split("/")[0] for line in out.splitlines() if " inet " in line]
        assert len(addrs) == 1, out
        return addrs[0]


@pytest.fixture(scope="module")
def lab(image, tmp_path_factory) -> Iterator[Lab]:
    labdir, client = tmp_path_factory.mktemp("lab") / "l", tmp_path_factory.mktemp("client")
    with running(image.squashfs, labdir, NS, API_PORT, client) as lab:
        yield lab


@pytest.fixture(scope="module")
def guests(lab, guest_image) -> Iterator[Guests]:
    """The managed network, the guest disk uploaded once and cloned per VM, and both VMs booted (once)."""
    pvc_ok(
        lab,
        "network",
        "add",
        str(VNI),
        "--name",
        "lan",
        "--type",
        "managed",
        "--subnet",
        SUBNET,
        "--gateway",
        GATEWAY,
        "--dhcp-start",
        RANGE[0],
        "--dhcp-end",
        RANGE[1],
        "--domain",
        DOMAIN,
        "--nat",
    )
    pvc_ok(lab, "storage", "volume", "upload", "vms", "guest", str(guest_image.qcow2), "--quiet", timeout=900)
    pvc_ok(lab, "storage", "snapshot", "add", "vms", "guest", "base")
    pvc_ok(lab, "storage", "snapshot", "protect", "vms", "guest", "base")
    started = time.monotonic()
    for vm, node in HOME.items():
        pvc_ok(lab, "storage", "volume", "clone", "vms", "guest", "base", vm)
        pvc_ok(
            lab,
            "vm",
            "define",
            "--name",
            vm,
            "--memory",
            "512",
            "--machine",
            "pc",
            "--disk",
            f"vms/{vm}",
            "--nic",
            str(VNI),
            "--node",
            node,
        )
        pvc_ok(lab, "vm", "start", vm, "--wait")
    g = Guests(lab)
    for vm in HOME:
        lab.wait(
            f"{vm}'s guest agent",
            lambda vm=vm: g.agent(vm, {"execute": "guest-ping"}) == {},
            GUEST_TIMEOUT,
            interval=5,
        )
        # the guest has no seed: name it (networkd sends the kernel's hostname with DHCP)
        g.ok(vm, f"hostname {vm} && echo {vm} > /etc/hostname")
    for vm in HOME:
        lab.wait(f"{vm}'s DHCP address", lambda vm=vm: g.address(vm), GUEST_TIMEOUT, interval=5)
        # a new DHCP client on each NIC, which sends the new name: dnsmasq's DNS learns it
        g.ok(vm, "for i in /sys/class/net/e*; do networkctl reconfigure ${i##*/}; done")
    print(f"guests: both have addresses {time.monotonic() - started:.0f} s after the first start")
    yield g


def leases(lab: Lab) -> dict[str, dict]:
    return {lease["mac"]: lease for lease in lab.api_json("network", "dhcp", "list", str(VNI))}


def test_vms_on_different_nodes_get_leases_in_the_range(guests):
    lab = guests.lab
    assert {vm: guests.node_of(vm) for vm in HOME} == HOME
    low, high = (ipaddress.IPv4Address(a) for a in RANGE)
    for vm in HOME:
        mac = lab.api_json("vm", "info", vm)["definition"]["nics"][0]["mac"]
        lease = lab.wait(
            f"{vm}'s lease named {vm}",
            lambda mac=mac, vm=vm: (x := leases(lab).get(mac)) and x["hostname"] == vm and x,
            120,
        )
        assert low <= ipaddress.IPv4Address(lease["ip"]) <= high and not lease["static"], lease
        assert guests.address(vm) == lease["ip"]


def test_vms_resolve_each_other_by_name_and_ping(guests):
    """By the network's domain (the guest's first NIC takes no DHCP search domain: docs/image.md), through the
    primary's dnsmasq, and ping across nodes over VXLAN."""
    for vm, other in (("vm1", "vm2"), ("vm2", "vm1")):
        want = guests.address(other)
        resolved = guests.lab.wait(
            f"{vm} resolving {other}",
            lambda vm=vm, other=other: guests.ok(vm, f"getent hosts {other}.{DOMAIN} || true").split()[:1],
            60,
        )
        assert resolved == [want]
        guests.ok(vm, f"ping -c 3 -W 5 {other}.{DOMAIN}")
