"""The provisioner in the 3-node container lab, with the real test guest (issue 14's system tests).

One lab and one VM serve the module: the test guest goes in with `pvc image upload`, a managed network and the
three templates, a userdata document and a profile are made through the CLI, and `pvc vm create web1 --profile web
--start --wait` makes and boots the VM. The checks then log in to it over SSH with the profile's key, from the
primary (which holds the managed network's gateway), change it (memory, a hot-plugged volume) and remove it with its
disks.

What the profile holds, and how the checks reach the guest, is in tests/harness/labprov.py (bench/provision.py uses
it too).

Run it under the heavy lock:
    flock /tmp/pvc-heavy.lock .venv/bin/python -m pytest tests/system/test_lab_provisioner.py
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.harness.labctl import Lab, running
from tests.harness.labprov import PROFILE, VNI, Guest, make_profile, pvc_ok
from tests.harness.labscenarios import primary

NS = os.environ.get("PVC_LAB_NS", "pvcsys")
API_PORT = 17372
VM = "web1"
FROM_SERVICE = "web2"  # made with --no-seed-volume: cloud-init reads the primary's metadata service


@pytest.fixture(scope="module")
def lab(image, tmp_path_factory) -> Iterator[Lab]:
    labdir, client = tmp_path_factory.mktemp("lab") / "l", tmp_path_factory.mktemp("client")
    with running(image.squashfs, labdir, NS, API_PORT, client) as lab:
        yield lab


@pytest.fixture(scope="module")
def web1(lab, guest_image, tmp_path_factory) -> Guest:
    """The profile (tests/harness/labprov.py), then web1 created from it and started; once it answers SSH."""
    upload = make_profile(lab, guest_image.qcow2, tmp_path_factory.mktemp("prov"))
    print(f"pvc image upload: {upload:.1f} s")
    started = time.monotonic()
    args = ("vm", "create", VM, "--profile", PROFILE, "--start", "--wait", "--arg", "greeting=hi")
    print(pvc_ok(lab, *args, timeout=900))
    print(f"vm create --start --wait: {time.monotonic() - started:.1f} s")
    # the second boots beside the first (one wait for both)
    print(pvc_ok(lab, "vm", "create", FROM_SERVICE, "--profile", PROFILE, "--no-seed-volume", "--start", "--wait",
                 timeout=900))  # fmt: skip
    guest = Guest(lab, VM)
    assert guest.wait_ssh() == VM
    print(f"{VM} answers SSH {time.monotonic() - started:.0f} s after the create began")
    return guest


def fetch(url: str) -> str:
    """A shell command that prints the page at `url` (the node image has Python, not curl)."""
    return f"python3 -c 'import urllib.request as u; print(u.urlopen(\"{url}\", timeout=5).read().decode())'"


def test_the_created_vm_logs_in_with_the_profiles_key_and_runs_its_userdata(web1):
    """The hostname is the VM's name, the key is the profile's, and the web server the userdata started serves the
    page with the create's --arg in it."""
    assert web1.ssh("hostname").strip() == VM
    status = web1.ssh("cloud-init status --wait >/dev/null; cloud-init status --long")
    assert "status: done" in status and "DataSourceNoCloud" in status, status  # from its seed disk
    lab = web1.lab
    page = lab.wait(
        "the userdata's web server",
        lambda: lab.sh(primary(lab), fetch(f"http://{web1.address()}:8080/"), check=False).strip(),
        120,
    )
    assert page == f"<h1>{VM} says hi</h1>"
    # its lease (and so its DNS name on the network) is the VM's name, not the image's hostname it first sent
    mac = web1.mac()
    names = {x["mac"]: x["hostname"] for x in lab.api_json("network", "dhcp", "list", str(VNI))}
    assert names.get(mac) == VM, names
    disks = sorted(d["volume"] for d in lab.api_json("vm", "info", VM)["definition"]["disks"])
    assert disks == [f"vms/{VM}_cidata", f"vms/{VM}_sda"], disks


def test_a_vm_without_a_seed_volume_takes_the_same_from_the_metadata_service(web1):
    """No seed volume at all: its name, the profile's key and the userdata (with the profile's default --arg) come from
    http://169.254.169.254, which the primary serves on the managed network."""
    guest = Guest(web1.lab, FROM_SERVICE)
    assert guest.wait_ssh() == FROM_SERVICE
    disks = [d["volume"] for d in web1.lab.api_json("vm", "info", FROM_SERVICE)["definition"]["disks"]]
    assert disks == [f"vms/{FROM_SERVICE}_sda"], disks
    status = guest.ssh("cloud-init status --wait >/dev/null; cloud-init status --long")
    assert "DataSourceEc2" in status and "status: done" in status, status
    page = guest.ssh("curl -fsS --retry 10 --retry-connrefused http://127.0.0.1:8080/", timeout=120)
    assert page.strip() == f"<h1>{FROM_SERVICE} says hello</h1>"
    pvc_ok(web1.lab, "vm", "stop", FROM_SERVICE, "--wait")
    pvc_ok(web1.lab, "vm", "remove", FROM_SERVICE, "--delete-disks", "--yes")


def test_a_volume_added_to_the_running_vm_is_seen_by_the_guest(web1):
    before = set(web1.ssh("lsblk -dn -o NAME").split())
    pvc_ok(web1.lab, "storage", "volume", "add", "vms", f"{VM}_data", "1G")
    print(pvc_ok(web1.lab, "vm", "volume", "add", VM, f"vms/{VM}_data"))
    new = web1.lab.wait(
        "the guest to see the new disk", lambda: set(web1.ssh("lsblk -dn -o NAME").split()) - before, 60
    )
    assert len(new) == 1, new
    assert int(web1.ssh(f"lsblk -dn -b -o SIZE /dev/{new.pop()}").strip()) == 1 << 30


def test_memory_set_then_restart_is_seen_by_the_guest(web1):
    meminfo = "awk '/MemTotal/ {print $2}' /proc/meminfo"
    before = int(web1.ssh(meminfo))
    assert before < 512 * 1024, before
    print(pvc_ok(web1.lab, "vm", "memory", "set", VM, "768M"))
    pvc_ok(web1.lab, "vm", "restart", VM, "--wait", timeout=600)
    web1.wait_ssh("SSH after the restart")
    after = int(web1.ssh(meminfo))
    assert 640 * 1024 < after <= 768 * 1024, after


def test_remove_with_its_disks_is_refused_while_running_and_then_leaves_no_volume(web1):
    lab = web1.lab
    refused = lab.pvc("vm", "remove", VM, "--delete-disks", "--yes")
    assert refused.returncode != 0 and "running" in (refused.stdout + refused.stderr), refused
    pvc_ok(lab, "vm", "stop", VM, "--wait")
    print(pvc_ok(lab, "vm", "remove", VM, "--delete-disks", "--yes"))
    left = [v["name"] for v in lab.api_json("storage", "volume", "list", "vms") if v["name"].startswith(f"{VM}_")]
    assert left == [], left
    assert VM not in [v["name"] for v in lab.api_json("vm", "list")]
