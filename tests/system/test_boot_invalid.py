"""A node given an invalid cluster.toml says so on its console, waits, and writes nothing to any disk."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from pvc.config import lab_hardware as hw
from pvc.installer.lab.container import Container, ContainerSpec
from pvc.nodeos.boot import console as node_console
from tests.harness.examples import example


def sh(*argv: str) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def invalid_node(image, tmp_path):
    ns = "pvcinv-n1"
    root = tmp_path / "root"
    root.mkdir()
    cfgdir = tmp_path / "cfg"
    cfgdir.mkdir()
    (cfgdir / "cluster.toml").write_text(example("lab-1node").read_text().replace("id = 1\n", 'id = "one"\n'))
    data = tmp_path / "data.img"
    with open(data, "wb") as f:
        f.truncate(2 * 1024**3)
    cfg_img = tmp_path / "config.img"
    with open(cfg_img, "wb") as f:
        f.truncate(16 * 1024**2)
    sh("mke2fs", "-q", "-t", "ext4", "-L", "PVCCONFIG", "-d", str(cfgdir), str(cfg_img))
    loops: list[str] = []
    subprocess.run(["ip", "netns", "del", ns], capture_output=True)
    sh("ip", "netns", "add", ns)
    sh("mount", "-o", "loop,ro", "-t", "squashfs", str(image.squashfs), str(root))
    node = None
    try:
        loops += [sh("losetup", "--find", "--show", "--partscan", str(p)).strip() for p in (data, cfg_img)]
        spec = ContainerSpec(
            name="invalid",
            netns=ns,
            root=str(root),
            console_log=str(tmp_path / "console.log"),
            binds=[(loops[0], hw.disk_by_id("data", "node1")), (loops[1], "/dev/disk/by-label/PVCCONFIG")],
        )
        node = Container(spec)
        node.start()
        yield node, data, loops[0]
    finally:
        if node is not None:
            node.power_off()
        for loop in loops:
            subprocess.run(["losetup", "-d", loop], capture_output=True)
        subprocess.run(["umount", str(root)], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def test_invalid_config_is_reported_and_no_disk_is_touched(invalid_node):
    node, data, loop = invalid_node
    deadline = time.monotonic() + 120
    console = ""
    while time.monotonic() < deadline:
        console = Path(node.spec.console_log).read_text(errors="replace")
        if console.count(node_console.WAITING_MARKER) >= 2:
            break
        time.sleep(1)
    assert node_console.line(node_console.waiting("cluster.toml from label PVCCONFIG")) in console, console[-3000:]
    assert "is invalid" in console and "cluster.toml:" in console and "nodes[0].id" in console
    assert "no disk has been touched; trying again in" in console
    assert "[1/" not in console  # formation never started
    assert sh("wipefs", "--no-act", "--noheadings", loop) == ""
    assert os.stat(data).st_blocks == 0  # not one block of the data disk was written
