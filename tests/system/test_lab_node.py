"""One container node of the real image, with `allow_wipe` left set in its cluster.toml: its logs are bounded, a
reboot keeps its PVCDATA (allow_wipe is a first-boot-only permission), and a PVCDATA whose superblock was destroyed
is repaired at boot from a backup superblock with its data intact (security review H9, M14, M7).
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import time
from pathlib import Path

import pytest

from pvc.config import lab_hardware as hw
from pvc.nodeos.boot import console as node_console
from pvc.nodeos.boot import probe
from tests.harness.examples import example
from tests.harness.labctl import Lab

NS = os.environ.get("PVC_LAB_NS", "pvcsys")  # the lab's namespace prefix: another run on this machine sets its own
API_PORT = 17375
KEEP = "/var/pvcdata/pvc/systest-keep"  # a file on PVCDATA that must outlive reboots and repairs


@pytest.fixture(scope="module")
def lab(image, tmp_path_factory):
    config = tmp_path_factory.mktemp("config") / "cluster.toml"
    text = example("lab-1node").read_text()
    selector = 'data_disk = { path = "/dev/disk/by-id/*pvc-data*" }'
    assert selector in text
    config.write_text(text.replace(selector, selector.replace(" }", ", allow_wipe = true }")))
    lab = Lab(tmp_path_factory.mktemp("lab") / "l", NS, API_PORT, tmp_path_factory.mktemp("client"))
    lab.run("down", check=False)
    try:
        out = lab.run(
            "up",
            *("--nodes", "1", "--config", str(config), "--squashfs", str(image.squashfs)),
            *("--api-port", str(API_PORT), "--timeout", "600"),
            timeout=700,
        )
        print(out.stdout)
        yield lab
    finally:
        print(lab.run("down", check=False).stdout)


def formed_again(lab: Lab, timeout: float = 300) -> str:
    """Wait until node1 has formed since its last power-on; its console since then."""
    lab.wait("node1 to form again", lambda: node_console.DONE_MARKER in lab.since_power_on("node1"), timeout)
    return lab.since_power_on("node1")


def test_logs_are_bounded(lab):
    journald = lab.sh("node1", "journalctl -b -q -u systemd-journald --no-pager | grep 'Runtime Journal' | tail -1")
    assert "max 128.0M" in journald, journald
    assert lab.sh("node1", "test -s /etc/logrotate.d/pvc && echo present").strip() == "present"
    rotate = lab.run("ssh", "node1", "--", "logrotate", "-d", "/etc/logrotate.conf", check=False)
    said = rotate.stdout + rotate.stderr
    assert rotate.returncode == 0 and "error:" not in said, said[-3000:]
    assert "/var/log/libvirt/qemu/*.log" in said and "/var/log/pvc/*.log" in said
    timer = lab.sh("node1", "systemctl is-enabled logrotate.timer; systemctl show -p TimersCalendar logrotate.timer")
    assert timer.startswith("enabled") and "*:00/15:00" in timer, timer  # systemd writes *:0/15 out in full
    # Ceph and libvirtd write to the journal, not to files in RAM
    assert lab.sh("node1", "ls /var/log/ceph/ | grep -c '^ceph-mon' || true").strip() == "0"
    assert lab.sh("node1", "journalctl -q -u pvc-ceph-mon@node1 --no-pager | wc -l").strip() != "0"
    assert lab.sh("node1", "test -e /var/log/libvirt/libvirtd.log && echo file || echo none").strip() == "none"
    # ZooKeeper snapshots by size and purges; PostgreSQL's replication slots keep a bounded WAL
    zoo = lab.sh("node1", "cat /etc/zookeeper/pvc/zoo.cfg")
    assert "snapSizeLimitInKb=65536" in zoo and "autopurge.purgeInterval=1" in zoo
    wal = lab.sh("node1", "runuser -u postgres -- psql -tAc 'SHOW max_slot_wal_keep_size'").strip()
    assert wal == "1GB"


def test_a_reboot_with_allow_wipe_set_keeps_pvcdata(lab):
    token = secrets.token_hex(16)
    lab.sh("node1", f"echo {token} > {KEEP} && sync")
    lab.sh("node1", "systemctl reboot", check=False)
    lab.wait("node1 to reboot", lambda: "rebooted" in (lab.labdir / "supervisor.log").read_text(), 120)
    console = formed_again(lab)
    assert "reusing PVCDATA" in console and "creating PVCDATA" not in console and "wiping" not in console
    assert "allow_wipe is still set for node 'node1'" in console  # the administrator is told to remove it
    assert lab.sh("node1", f"cat {KEEP}").strip() == token


def data_partition(lab: Lab) -> str:
    """The host's device for partition 1 of node1's data disk (a loop device with partition scanning)."""
    doc = json.loads((lab.labdir / "lab.json").read_text())
    loop = next(src for src, dst in doc["nodes"][0]["binds"] if dst == hw.disk_by_id("data", "node1"))
    return f"{loop}p1"


def test_a_damaged_superblock_is_repaired_at_boot_with_the_data_intact(lab):
    token = secrets.token_hex(16)
    lab.sh("node1", f"echo {token} > {KEEP} && sync")
    lab.sh("node1", "systemctl poweroff", check=False)
    lab.wait("node1 to power off", lambda: lab.status()["nodes"][0]["power"] == "off", 120)
    part = data_partition(lab)
    name = Path(part).name
    lab.wait("PVCDATA unmounted", lambda: not Path(f"/sys/fs/ext4/{name}").exists(), 60)
    subprocess.run(
        ["dd", "if=/dev/zero", f"of={part}", "bs=1024", "seek=1", "count=1", "oflag=direct", "conv=notrunc"],
        check=True,
        capture_output=True,
    )
    assert "TYPE" not in probe.superblock(part)  # no filesystem to be seen: mkfs would have been the old answer
    started = time.monotonic()
    lab.run("start", "node1")
    console = formed_again(lab)
    print(f"formed again {time.monotonic() - started:.0f} s after power-on, with a repair")
    assert "repaired PVCDATA" in console and "creating PVCDATA" not in console, console[-3000:]
    assert lab.sh("node1", f"cat {KEEP}").strip() == token
    assert probe.superblock(part).get("TYPE") == "ext4"
