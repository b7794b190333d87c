"""The test guest disk (`pvc-image guest`): built or reused from the cache, then booted with plain QEMU (TCG here,
KVM where it boots a stock kernel) from a NoCloud seed made here, with user-mode networking forwarding a loopback
port to its sshd. One SeaBIOS boot is shared by the module's checks; a second boot checks UEFI (OVMF).

Run it under the heavy lock: `flock /tmp/pvc-heavy.lock .venv/bin/python -m pytest tests/system/test_guest_image.py`.
"""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from pvc.image.guest import GuestArtifacts, build_guest
from pvc.image.recipe import GuestRecipe
from pvc.installer.lab.vm import OVMF_CODE
from tests.harness.guest import (
    CLOUD_INIT_DONE,
    LOGIN_PROMPT,
    Guest,
    GuestSpec,
    meta_data,
    overlay_disk,
    seed_iso,
)
from tests.harness.ports import free_port

pytestmark = pytest.mark.system

BOOT_TIMEOUT = 600  # TCG on a shared 2-core machine: about 40-90 s, more when the machine is busy
HOSTNAME = "guest-bios"


@dataclass
class Booted:
    guest: Guest
    key: Path
    marker: str
    hostname: str

    def ssh(self, command: str) -> str:
        res = self.guest.ssh(self.key, command)
        assert res.returncode == 0, f"ssh {command!r} failed ({res.returncode}): {res.stderr}"
        return res.stdout


def user_data(public_key: str, marker: str) -> str:
    return f"#cloud-config\nssh_authorized_keys:\n  - {public_key.strip()}\nruncmd:\n  - echo {marker} > /dev/ttyS0\n"


def boot(image: GuestArtifacts, workdir: Path, hostname: str, firmware: str) -> Booted:
    """Start the guest on a fresh overlay with a seed naming it `hostname` and installing a new key."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = workdir / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    marker = f"pvc-guest-marker-{secrets.token_hex(6)}"
    seed = seed_iso(
        workdir / "seed.iso",
        {
            "meta-data": meta_data(f"i-{secrets.token_hex(4)}", hostname),
            "user-data": user_data(key.with_suffix(".pub").read_text(), marker),
        },
    )
    disk = overlay_disk(image.qcow2, workdir / "disk.qcow2")
    spec = GuestSpec(disk=disk, workdir=workdir, seed=seed, firmware=firmware, ssh_port=free_port())
    return Booted(Guest(spec), key, marker, hostname)


@pytest.fixture(scope="module")
def booted(guest_image, tmp_path_factory) -> Iterator[Booted]:
    """One SeaBIOS boot of the guest, up to cloud-init's final message."""
    b = boot(guest_image, tmp_path_factory.mktemp("guest-bios"), HOSTNAME, "bios")
    try:
        login = b.guest.wait_for(LOGIN_PROMPT, BOOT_TIMEOUT)
        done = b.guest.wait_for(CLOUD_INIT_DONE, BOOT_TIMEOUT)
        print(f"guest ({b.guest.spec.accel}): login prompt after {login:.0f} s, cloud-init finished after {done:.0f} s")
        yield b
    finally:
        b.guest.stop()


def test_disk_and_manifest(guest_image):
    info = json.loads(
        subprocess.run(
            ["qemu-img", "info", "--output=json", str(guest_image.qcow2)], capture_output=True, text=True, check=True
        ).stdout
    )
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == GuestRecipe().disk_mib * 2**20
    assert guest_image.qcow2.stat().st_size < info["virtual-size"] / 4  # compressed, and the free space costs nothing
    doc = json.loads(guest_image.manifest.read_text())
    assert doc["inputs_sha256"] == guest_image.key
    art = doc["artifacts"]["pvc-guest.qcow2"]
    assert art["size"] == guest_image.qcow2.stat().st_size
    assert art["virtual_size"] == info["virtual-size"]
    for pkg in GuestRecipe().packages:
        assert re.match(r"^\d", doc["packages"].get(pkg, "")), f"{pkg} missing or without a version"
    # small: no perl (usrmerge), no second kernel flavour, no default user's sudo
    for pkg in ("perl", "usrmerge", "linux-image-amd64", "sudo"):
        assert pkg not in doc["packages"], pkg


def test_second_build_comes_from_the_cache(guest_image):
    again = build_guest(guest_image.qcow2.parent, progress=lambda line: None)
    assert again.cached
    assert again.key == guest_image.key
    assert again.qcow2.stat().st_size == guest_image.qcow2.stat().st_size


def test_cloud_init_finished_from_the_nocloud_seed(booted):
    status = booted.ssh("cloud-init status --long")
    assert re.search(r"^status: done$", status, re.M), status
    assert "DataSourceNoCloud" in status
    assert CLOUD_INIT_DONE.search(booted.guest.console())


def test_user_data_wrote_the_marker_to_the_serial_console(booted):
    assert booted.marker in booted.guest.console()


def test_hostname_is_the_seeds_local_hostname(booted):
    assert booted.ssh("hostname").strip() == booted.hostname
    assert re.search(rf"^{booted.hostname} login: ", booted.guest.console(), re.M)


def test_ssh_with_the_seeds_key_runs_a_command_over_dhcp(booted):
    out = booted.ssh("echo hello-from-$(hostname); ip -4 -o addr show scope global")
    assert f"hello-from-{booted.hostname}" in out
    assert "10.0.2.15/24" in out  # the address QEMU's user-mode DHCP server hands out


def test_no_password_login_and_no_default_user(booted):
    shadow = booted.ssh("grep '^root:' /etc/shadow")
    assert shadow.split(":")[1].startswith("!"), "root's password is not locked"
    sshd = booted.ssh("sshd -T")
    assert "passwordauthentication no" in sshd and "kbdinteractiveauthentication no" in sshd
    assert "permitrootlogin without-password" in sshd  # root by key only (prohibit-password)
    res = booted.guest.ssh(booted.key, "getent passwd debian")
    assert res.returncode == 2, "Debian's default cloud user exists"
    assert booted.ssh("ls /etc/ssh/ | grep ssh_host_ | sort").split() == [
        "ssh_host_ed25519_key",
        "ssh_host_ed25519_key.pub",
    ]


def test_guest_agent_answers(booted):
    assert booted.guest.agent("guest-get-host-name")["return"]["host-name"] == booted.hostname


def test_tools_the_tests_use_are_there(booted):
    out = booted.ssh("ping -c1 -W5 10.0.2.2 >/dev/null && echo ping-ok; command -v nc curl")
    assert "ping-ok" in out
    assert "/usr/bin/nc" in out and "/usr/bin/curl" in out


def test_a_hot_plugged_nic_gets_dhcp(booted):
    before = set(booted.ssh("ls /sys/class/net").split())
    booted.guest.qmp(
        {"execute": "netdev_add", "arguments": {"type": "user", "id": "hotplug-net"}},
        {"execute": "device_add", "arguments": {"driver": "virtio-net-pci", "netdev": "hotplug-net", "id": "nic1"}},
    )
    deadline, new, addrs = time.monotonic() + 120, set(), ""
    while time.monotonic() < deadline:
        new = set(booted.ssh("ls /sys/class/net").split()) - before
        if new:
            addrs = booted.ssh(f"ip -4 -o addr show dev {next(iter(new))}")
            if "inet " in addrs:
                break
        time.sleep(2)
    assert new, "the hot-plugged NIC did not appear in the guest"
    assert "inet 10.0.2.15/24" in addrs, f"no DHCP address on {new}: {addrs!r}"


@pytest.mark.skipif(not OVMF_CODE.exists(), reason="no OVMF firmware (package ovmf)")
def test_boots_under_uefi(guest_image, tmp_path):
    """A second boot, under OVMF on q35: grub from the ESP, then the same system up to the login prompt."""
    b = boot(guest_image, tmp_path, "guest-uefi", "uefi")
    try:
        login = b.guest.wait_for(LOGIN_PROMPT, BOOT_TIMEOUT)
        console = b.guest.console()
        print(f"guest under OVMF: login prompt after {login:.0f} s")
        assert "Welcome to GRUB" in console
        assert re.search(r"^guest-uefi login: ", console, re.M), "cloud-init did not set the seed's hostname"
    finally:
        b.guest.stop()
