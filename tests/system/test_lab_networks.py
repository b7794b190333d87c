"""Client networks in the 3-node container lab, with the real test guest (issue 13's system tests).

One lab and two guests serve the whole module: a managed network with NAT is added through `pvc network add`, the
guest image reaches the cluster through `pvc storage volume upload` (qcow2) and a snapshot clone per VM, and the two
VMs are defined through the typed model (`pvc vm define --nic`) on different nodes. The tests talk to the guests
through the QEMU guest agent (`guest-exec`, by `virsh qemu-agent-command` on the VM's node), which needs no network
of its own. The lab's upstream router (installer/lab/upstream.py) is the BGP peer and the world behind it holds a TCP
peer (tests/harness/peer.py) that answers each connection with the address it came from (so NAT shows) and echoes.

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

from pvc.installer.lab import upstream
from tests.harness import peer
from tests.harness.labctl import Lab, running

NS = os.environ.get("PVC_LAB_NS", "pvcsys")
API_PORT = 17372
NODES = ("node1", "node2", "node3")
# The network's own domain: the default, <name>.<cluster domain>, ends in .invalid in the lab configs, which the
# guest's systemd-resolved never looks up (RFC 6761).
VNI, DOMAIN = 100, "lan.pvc.test"
SUBNET, GATEWAY, RANGE = "10.100.0.0/24", "10.100.0.1", ("10.100.0.100", "10.100.0.199")
UPSTREAM = ipaddress.ip_network("192.0.2.0/24")  # lab-3node.toml
HOME = {"vm1": "node2", "vm2": "node3"}  # different nodes
GUEST_TIMEOUT = 900  # two TCG boots at once inside the lab on a shared 2-core machine


def pvc_ok(lab: Lab, *args: str, timeout: float = 300) -> str:
    out = lab.pvc(*args, timeout=timeout)
    assert out.returncode == 0, f"pvc {' '.join(args)}: {out.stdout}\n{out.stderr}"
    return out.stdout


@dataclass
class Guests:
    lab: Lab
    world: str  # the world namespace, where the TCP peer listens

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

    def resolve(self, vm: str, name: str) -> str:
        """The IPv4 address the guest's resolver finds for name by DNS alone (a short name through the search
        domain, not LLMNR, which would find it without one); '' if none."""
        out = self.ok(vm, f"resolvectl query -4 -p dns --legend=no {name} || true")
        words = out.split()
        return words[1] if words[:1] == [f"{name}:"] and words[1].count(".") == 3 else ""

    def ask_world(self, vm: str, timeout: float = 5) -> str:
        """The address the world's peer saw this guest's connection come from ('' if it could not connect)."""
        code, out = self.run(vm, f"python3 -c '{ASK}' {upstream.WORLD_ADDRESS} {peer.PORT} {timeout}", timeout + 30)
        return out.strip() if code == 0 else ""


ASK = "import socket,sys; s=socket.create_connection((sys.argv[1],int(sys.argv[2])),float(sys.argv[3])); print(s.makefile().readline().strip())"


@pytest.fixture(scope="module")
def lab(image, tmp_path_factory) -> Iterator[Lab]:
    labdir, client = tmp_path_factory.mktemp("lab") / "l", tmp_path_factory.mktemp("client")
    with running(image.squashfs, labdir, NS, API_PORT, client) as lab:
        yield lab


@pytest.fixture(scope="module")
def guests(lab, guest_image) -> Iterator[Guests]:
    """The managed network, the guest disk uploaded once and cloned per VM, and both VMs booted (once)."""
    world = peer.start(f"{NS}-world")
    try:
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
        g = Guests(lab, f"{NS}-world")
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
    finally:
        world.terminate()


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
    """By the network's domain and by the short name (every NIC, the first one that cloud-init configures too, takes
    the search domain from DHCP: docs/image.md), through the primary's dnsmasq, and ping across nodes over VXLAN."""
    for vm, other in (("vm1", "vm2"), ("vm2", "vm1")):
        # the search domain on the guest's one NIC (not LLMNR, which would find a short name without it)
        links = [line for line in guests.ok(vm, "resolvectl domain").splitlines() if "(e" in line]
        assert links and all(line.split()[-1] == DOMAIN for line in links), links
        want = guests.address(other)
        for name in (f"{other}.{DOMAIN}", other):
            resolved = guests.lab.wait(
                f"{vm} resolving {name} by DNS",
                lambda vm=vm, name=name: guests.resolve(vm, name),
                60,
            )
            assert resolved == want, name
        guests.ok(vm, f"ping -4 -c 2 -W 5 {other}")


def primary(lab: Lab) -> str:
    return next(str(n["name"]) for n in lab.api_json("node", "list") if n["primary"])


UPSTREAM_IP = {"node1": "192.0.2.11", "node2": "192.0.2.12", "node3": "192.0.2.13"}  # lab-3node.toml
FLOATING_IP = "192.0.2.250"


def test_a_vm_reaches_the_world_through_nat(guests):
    """The world sees the primary's upstream address (or the floating one it holds), never the VM's."""
    seen = guests.lab.wait("vm1 reaching the world", lambda: guests.ask_world("vm1"), 60)
    assert seen in (UPSTREAM_IP[primary(guests.lab)], FLOATING_IP), f"the world saw {seen}"


def test_the_lab_router_learns_the_subnet_by_bgp(guests):
    """Without NAT the primary announces the subnet; the router learns it (next hop: an upstream address of the
    primary) and the world sees the VM's own address."""
    lab = guests.lab
    pvc_ok(lab, "network", "modify", str(VNI), "--no-nat")
    try:
        learned = lab.wait(
            "the lab router learning the subnet",
            lambda: upstream.learned(f"{NS}-router").get(SUBNET),
            90,
        )
        assert len(learned) == 1 and ipaddress.ip_address(learned[0]) in UPSTREAM, learned
        vm1 = guests.address("vm1")
        assert lab.wait("the world seeing vm1's own address", lambda: guests.ask_world("vm1") == vm1, 60)
        status = lab.status()["upstream"]
        assert SUBNET in status["learned"] and "Established" in status["sessions"].values(), status
    finally:
        pvc_ok(lab, "network", "modify", str(VNI), "--nat")


def test_a_primary_failover_keeps_the_world_reachable(guests):
    """`pvc node primary` moves the gateway, dnsmasq and NAT to another coordinator: the VMs reach the world again
    (bench/networks.py measures how fast), now masqueraded by the new primary."""
    lab = guests.lab
    lab.wait("the world through NAT", lambda: guests.ask_world("vm2"), 60)
    old = primary(lab)
    target = next(n for n in NODES if n != old)
    started = time.monotonic()
    # the API moves with the floating IP: a --wait that loses its connection is asked again
    lab.wait(f"{target} to be the primary", lambda: lab.pvc("node", "primary", target, "--wait").returncode == 0, 180)
    after = lab.wait(
        "the world again after the primary moved", lambda: guests.ask_world("vm2", timeout=3), 180, interval=0.5
    )
    print(f"world reachable again {time.monotonic() - started:.1f} s after `pvc node primary {target}` (from {old})")
    assert primary(lab) == target
    assert after in (UPSTREAM_IP[target], FLOATING_IP), after
    assert guests.ask_world("vm1") in (UPSTREAM_IP[target], FLOATING_IP)


KEEP = """
import socket, sys, time
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 10)
s.settimeout(120)
f = s.makefile("rw")
print("greeting", f.readline().strip(), flush=True)
i = 0
while True:
    f.write(f"{i}\\n"); f.flush()
    line = f.readline()
    if line.strip() != str(i):
        print("broken", i, repr(line), flush=True); break
    print("ok", i, flush=True)
    i += 1; time.sleep(0.5)
"""


def test_a_live_migration_keeps_the_address_and_a_tcp_connection(guests):
    lab = guests.lab
    address = guests.address("vm2")
    encoded = base64.b64encode(KEEP.encode()).decode()
    guests.ok(
        "vm2",
        f"echo {encoded} | base64 -d > /run/keep.py; "
        f"setsid nohup python3 /run/keep.py {upstream.WORLD_ADDRESS} {peer.PORT} > /run/keep.log 2>&1 &",
    )

    def count() -> int:
        log = guests.ok("vm2", "cat /run/keep.log")
        assert "broken" not in log and "Traceback" not in log, log
        return sum(1 for line in log.splitlines() if line.startswith("ok "))

    lab.wait("the connection carrying data", lambda: count() >= 3, 60)
    source = guests.node_of("vm2")
    target = next(n for n in NODES if n not in (source, HOME["vm1"]))
    pvc_ok(lab, "vm", "migrate", "vm2", "--target", target, "--wait", timeout=600)
    assert guests.node_of("vm2") == target
    at_migration = count()
    assert lab.wait("the connection carrying data after the migration", lambda: count() >= at_migration + 5, 120)
    assert guests.address("vm2") == address
    assert guests.ok("vm1", f"ping -c 2 -W 5 {address} >/dev/null && echo reached").strip() == "reached"
