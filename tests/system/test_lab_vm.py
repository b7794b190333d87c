"""The lab's `vm` backend boots the real boot media in QEMU: the USB image under UEFI forms a 1-node cluster (whose
bridged network's VLAN then carries a DHCP lease to a stand-in guest: 802.1Q needs the node's own kernel); the same
image under BIOS, and over PXE (SeaBIOS + qemu's iPXE ROM, the lab's dnsmasq and HTTP server), gets far enough that
the node has found itself in cluster.toml and created and mounted PVCDATA.

TCG on the development machines (their /dev/kvm is a nested PVM host that hangs a stock kernel): about a minute to
userspace, several minutes to a formed node. Each test has its own lab folder, namespace and API port, so the
container-lab tests can run in the same session.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pvc.nodeos.boot import console as node_console
from pvc.nodeos.formation.plan import STEPS
from tests.harness.examples import example
from tests.harness.labctl import Lab

NS = os.environ.get("PVC_LAB_NS", "pvcvm")  # the lab's namespace prefix: another run on this machine sets its own
API_PORT = 17381
FORM_TIMEOUT = 1500  # seconds: a whole formation under TCG (measured ~7-9 min on 2 shared cores)
BOOT_TIMEOUT = 600  # seconds: to the data step under TCG (measured ~1.5-2.5 min)
BRIDGED_NIC = "enp0s19"  # NIC 3 (vm.nic_name(3)), on the lab's spare bridge
SPARE_BRIDGE = "xt0"  # network.plan(): the bridge of every NIC that carries no core network
VLAN = 100
VLAN_SUBNET = "10.77.0.0/24"  # the lab router's DHCP on VLAN 100 (tests/harness/vlandhcp.py)

pytestmark = pytest.mark.skipif(shutil.which("qemu-system-x86_64") is None, reason="qemu-system-x86 is not installed")


@pytest.fixture
def vmlab(image, tmp_path):
    """A factory: vmlab(boot, *args) runs `pvc-lab up --backend vm --boot BOOT ...`; the lab is always downed."""
    lab = Lab(tmp_path / "lab", NS, API_PORT, tmp_path / "client")
    lab.run("down", check=False)
    used = []

    def up(boot: str, *args: str, timeout: float) -> tuple[Lab, float]:
        used.append(lab)
        started = time.monotonic()
        out = lab.run(
            "up",
            *("--backend", "vm", "--nodes", "1", "--boot", boot, "--api-port", str(API_PORT)),
            *("--squashfs", str(image.squashfs), "--timeout", str(timeout), *args),
            timeout=timeout + 300,
            check=False,
        )
        elapsed = time.monotonic() - started
        print(out.stdout, out.stderr)
        if out.returncode != 0:
            raise AssertionError(f"pvc-lab up --boot {boot} failed:\n{out.stdout}\n{out.stderr}")
        print(f"vm lab, boot {boot}: up returned after {elapsed:.0f} s")
        return lab, elapsed

    yield up
    if used:
        print(lab.run("down", check=False).stdout)
        leftovers = subprocess.run(["pgrep", "-f", f"{tmp_path}/lab"], capture_output=True, text=True).stdout.split()
        assert not leftovers, f"processes of the lab left after down: {leftovers}"
        assert NS not in subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()


def user_key(tmp_path: Path) -> tuple[Path, Path]:
    """The lab's lab-vm-1node.toml with a fresh ssh key for its [[users]] admin (the way an administrator reaches a vm
    node: pvc-lab ssh --identity), sudo for that admin, and a 4th NIC as `[network.bridged] device`."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    pub = (tmp_path / "id_ed25519.pub").read_text().strip()
    text = example("lab-vm-1node").read_text()
    start = text.index("ssh_keys = [")
    end = text.index("]", start) + 1
    text = text[:start] + f'ssh_keys = ["{pub}"]\nsudo = true' + text[end:]  # sudo: the guest namespace below
    # a 4th NIC for bridged client networks: not a core network's device, so the lab puts it on its spare bridge
    nics_end = text.index("[network.upstream]")
    text = text[:nics_end] + f'[[network.nics]]\nname = "{BRIDGED_NIC}"\nmtu = 1500\n\n' + text[nics_end:]
    text = text.replace("\n[bgp]", f'\n[network.bridged]\ndevice = "{BRIDGED_NIC}"\n\n[bgp]', 1)
    config = tmp_path / "cluster.toml"
    config.write_text(text)
    return config, key


def data_done(lab: Lab, node: str = "node1") -> str:
    console = lab.since_power_on(node)
    assert "config from PVCCONFIG" in console or "config from" in console
    assert "this is node 'node1'" in console
    line = next(line for line in console.splitlines() if "] data: done" in line)
    assert "PVCDATA" in line and "mounted on" in line, line
    return line


def test_usb_uefi_forms_a_one_node_cluster(vmlab, tmp_path):
    config, key = user_key(tmp_path)
    lab, elapsed = vmlab("usb-uefi", "--config", str(config), timeout=FORM_TIMEOUT)
    console = lab.since_power_on("node1")
    assert node_console.done("node1", len(STEPS)) in console  # a lone coordinator runs every formation step
    assert "BdsDxe" in console or "UEFI" in console  # OVMF, not SeaBIOS, booted it
    data_done(lab)
    status = lab.status()
    assert status["backend"] == "vm" and status["nodes"][0]["formed"], status
    # the API over HTTPS, the cluster's CA pinned (the `lab` connection pvc-lab up registered --from-config)
    nodes = lab.api_json("node", "list")
    assert [(n["name"], n["daemon_state"]) for n in nodes] == [("node1", "run")], nodes
    out = lab.run("ssh", "--identity", str(key), "node1", "--", "findmnt", "-no", "FSTYPE,OPTIONS", "/")
    assert out.stdout.startswith("overlay"), out.stdout
    whoami = lab.run("ssh", "--identity", str(key), "node1", "--", "id", "-un").stdout.strip()
    assert whoami == "admin"
    print(f"usb-uefi: formed in {elapsed:.0f} s (pvc-lab up to PVC-FORMATION-DONE)")
    bridged_network_guest_gets_a_lease_on_its_vlan(lab, key)


def bridged_network_guest_gets_a_lease_on_its_vlan(lab: Lab, key: Path) -> None:
    """A bridged network: the node makes vlan<N> (802.1Q, a kernel feature only a vm node has) on its bridged NIC
    and vmbr<N> on it; a stand-in guest (a namespace on vmbr<N> inside the node) gets a lease from the lab router's
    DHCP on that VLAN, which answers from the lab's spare bridge, where the tagged frames arrive."""
    started = time.monotonic()
    out = lab.pvc("network", "add", str(VLAN), "--name", "lan", "--type", "bridged")
    assert out.returncode == 0, out.stderr
    responder = [sys.executable, "-m", "tests.harness.vlandhcp", SPARE_BRIDGE, str(VLAN), VLAN_SUBNET]
    router = subprocess.Popen(
        ["ip", "netns", "exec", lab.ns, *responder],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert router.stdout is not None and router.stdout.readline().startswith(f"serving VLAN {VLAN}")
        guest = f"""set -e
for i in $(seq 90); do ip link show vmbr{VLAN} >/dev/null 2>&1 && ip link show vlan{VLAN} >/dev/null 2>&1 && break; sleep 1; done
ip -d link show vlan{VLAN}
ip netns add vguest
ip link add vg0 type veth peer name vgp
ip link set vg0 netns vguest
ip link set vgp master vmbr{VLAN} up
ip -n vguest link set vg0 up
ip netns exec vguest busybox udhcpc -i vg0 -n -q -f -t 10 -T 2 -s /bin/true 2>&1
"""
        got = lab.run(
            "ssh", "--identity", str(key), "node1", "--", "sudo /bin/sh -c " + shlex.quote(guest), timeout=180
        )
        print(got.stdout)
        assert f"vlan protocol 802.1Q id {VLAN}" in got.stdout and f"master vmbr{VLAN}" in got.stdout, got.stdout
        assert f"vlan{VLAN}@{BRIDGED_NIC}" in got.stdout, got.stdout  # on [network.bridged] device
        assert "lease of 10.77.0.100 obtained" in got.stdout, got.stdout
        assert router.stdout.readline().startswith(f"offer {VLAN} ")
        assert router.stdout.readline().startswith(f"ack {VLAN} ")
    finally:
        router.kill()
        router.wait()
    print(f"bridged network {VLAN}: guest leased on the VLAN {time.monotonic() - started:.0f} s after network add")


def test_usb_bios_finds_itself_and_mounts_pvcdata(vmlab):
    lab, elapsed = vmlab("usb-bios", "--until", "data", timeout=BOOT_TIMEOUT)
    console = lab.since_power_on("node1")
    assert "SYSLINUX" in console or "syslinux" in console.lower()  # SeaBIOS booted syslinux from the stick
    print(f"usb-bios: data done after {elapsed:.0f} s: {data_done(lab)}")


def test_pxe_bios_finds_itself_and_mounts_pvcdata(vmlab):
    lab, elapsed = vmlab("pxe-bios", "--until", "data", timeout=BOOT_TIMEOUT)
    console = lab.since_power_on("node1")
    assert "fetch=http://" in console  # the kernel came over the network, live-boot fetched the root over HTTP
    pxe_log = (lab.labdir / "pxe" / "pxe.log").read_text(errors="replace")
    assert "GET /filesystem.squashfs" in pxe_log and "DHCPACK" in pxe_log
    print(f"pxe-bios: data done after {elapsed:.0f} s: {data_done(lab)}")
