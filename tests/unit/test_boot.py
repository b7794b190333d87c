"""Boot-time discovery and identity (pure parts, plus discovery against real files and a local HTTP server)."""

from __future__ import annotations

import http.server
import threading
from pathlib import Path
from typing import ClassVar

import pytest

from pvc.config.load import load_text
from pvc.config.schema import DataDisk
from pvc.nodeos.boot import cmdline, discover, disks, identity
from tests.harness.examples import example, example_cluster


def lab3():
    return example_cluster("lab-3node")


def test_cmdline_parses_pvc_arguments_only():
    args = cmdline.parse(
        "BOOT_IMAGE=/vmlinuz boot=live quiet pvc.config=http://10.0.0.1/c/${mac}.toml pvc.node=hv2 pvc.debug"
    )
    assert args == {"config": "http://10.0.0.1/c/${mac}.toml", "node": "hv2", "debug": "1"}
    assert cmdline.parse('pvc.node="unbalanced') == {"node": '"unbalanced'}


def test_url_expansion():
    assert (
        cmdline.expand("http://h/${mac}.toml", mac="52:54:00:AA:00:01", node=None) == "http://h/52-54-00-aa-00-01.toml"
    )
    assert cmdline.expand("http://h/${node}", mac=None, node="hv1") == "http://h/hv1"
    assert cmdline.expand("http://h/${node}", mac="x", node=None) is None


def test_identity_by_mac_and_by_argument():
    cfg = lab3()
    assert identity.find(cfg, ["aa:bb:cc:dd:ee:ff", "52:54:00:5C:00:02"], None).name == "node2"
    assert identity.find(cfg, [], "node3").name == "node3"


def test_identity_errors_say_what_to_fix():
    cfg = lab3()
    with pytest.raises(identity.NotInConfig, match=r"this machine has: aa:bb:cc:dd:ee:ff.*pvc.node=NAME"):
        identity.find(cfg, ["aa:bb:cc:dd:ee:ff"], None)
    with pytest.raises(identity.NotInConfig, match="no such node"):
        identity.find(cfg, [], "node9")


def test_owned_macs_reads_sysfs(tmp_path):
    for name, mac in (("lo", "00:00:00:00:00:00"), ("eth0", "52:54:00:5C:00:01"), ("eth1", "52:54:00:aa:bb:cc")):
        (tmp_path / name).mkdir()
        (tmp_path / name / "address").write_text(mac + "\n")
    assert identity.owned_macs(tmp_path) == ["52:54:00:5c:00:01", "52:54:00:aa:bb:cc"]


def test_disk_selectors():
    disk = disks.Disk(
        name="sdb",
        dev="/dev/sdb",
        size=480 * 10**9,
        model="INTEL SSDSC2KB480G8",
        serial="PHYS1234",
        paths=("/dev/sdb", "/dev/disk/by-id/ata-INTEL_SSDSC2KB480G8_PHYS1234"),
    )
    assert disks.matches(DataDisk(model="INTEL SSDSC2KB*"), disk)
    assert disks.matches(DataDisk(path="/dev/disk/by-id/*PHYS1234"), disk)
    assert disks.matches(DataDisk(size_min=400 * 10**9, size_max=500 * 10**9), disk)
    assert not disks.matches(DataDisk(size_min=500 * 10**9), disk)
    assert not disks.matches(DataDisk(serial="OTHER*"), disk)
    assert not disks.matches(DataDisk(model="INTEL*", serial="OTHER"), disk)  # every criterion must match


def test_discovery_order_label_then_embedded(tmp_path, monkeypatch):
    embedded = tmp_path / "etc" / "cluster.toml"
    embedded.parent.mkdir()
    embedded.write_text("# embedded\n")
    monkeypatch.setattr(discover, "EMBEDDED", embedded)
    monkeypatch.setattr(discover, "label_device", lambda: None)
    found = discover.discover({}, [], stage_dir=tmp_path / "run" / "pvc")
    assert found.source == f"embedded {embedded}" and found.path.read_text() == "# embedded\n"
    monkeypatch.setattr(discover, "EMBEDDED", tmp_path / "missing.toml")
    with pytest.raises(discover.Unavailable, match="no filesystem labelled PVCCONFIG"):
        discover.discover({}, [], stage_dir=tmp_path / "run" / "pvc")


class _Configs(http.server.BaseHTTPRequestHandler):
    served: ClassVar[dict[str, bytes]] = {}

    def do_GET(self):
        body = self.served.get(self.path)
        self.send_response(200 if body is not None else 404)
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


def test_url_source_tries_each_mac_and_never_falls_back(tmp_path, monkeypatch):
    server = http.server.HTTPServer(("127.0.0.1", 0), _Configs)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        _Configs.served = {"/c/52-54-00-00-00-02.toml": b"# for node 2\n"}
        url = f"http://127.0.0.1:{server.server_port}/c/${{mac}}.toml"
        found = discover.discover(
            {"config": url}, ["52:54:00:00:00:01", "52:54:00:00:00:02"], stage_dir=tmp_path / "pvc"
        )
        assert found.path.read_text() == "# for node 2\n" and found.source.endswith("52-54-00-00-00-02.toml")
        _Configs.served = {}
        monkeypatch.setattr(discover, "EMBEDDED", Path(__file__))  # present, but must not be used
        with pytest.raises(discover.Unavailable, match="HTTP 404"):
            discover.discover({"config": url}, ["52:54:00:00:00:01"], stage_dir=tmp_path / "pvc")
    finally:
        server.shutdown()


def test_invalid_config_reports_file_line_and_touches_nothing(tmp_path, monkeypatch):
    from pvc.nodeos.boot import startup

    bad = (example("lab-3node")).read_text().replace("id = 2\n", 'id = "two"\n')
    src = tmp_path / "src" / "cluster.toml"
    src.parent.mkdir()
    src.write_text(bad)
    monkeypatch.setattr(discover, "EMBEDDED", src)
    monkeypatch.setattr(discover, "label_device", lambda: None)
    monkeypatch.setattr(discover, "STAGE", tmp_path / "pvc")
    monkeypatch.setattr(identity, "owned_macs", lambda: ["52:54:00:5c:00:01"])
    with pytest.raises(discover.Unavailable) as info:
        startup.attempt({})
    assert "is invalid" in str(info.value) and "cluster.toml:" in str(info.value) and "nodes[1].id" in str(info.value)
    assert load_text(bad, "x").valid is False
