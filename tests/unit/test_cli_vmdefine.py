"""What `pvc vm define|modify` send: definitions from options and from files (JSON, YAML, domain XML)."""

from __future__ import annotations

import click
import pytest

from pvc.cli import vmdefine
from pvc.cli.errors import Failure


def test_memory_is_mib_or_a_size():
    assert vmdefine.memory_mib("2048") == 2048
    assert vmdefine.memory_mib("2G") == 2048 and vmdefine.memory_mib("512M") == 512
    with pytest.raises(click.BadParameter, match="not a whole number of MiB"):
        vmdefine.memory_mib("1000K")
    with pytest.raises(click.BadParameter, match="is not a size"):
        vmdefine.memory_mib("lots")


def test_disks_and_nics_take_key_value_options():
    assert vmdefine.disk("vms/root") == {"volume": "vms/root"}
    assert vmdefine.disk("vms/seed,device=cdrom,bus=scsi,ro,size=20G") == {
        "volume": "vms/seed",
        "device": "cdrom",
        "bus": "scsi",
        "read_only": True,
        "size": "20G",
    }
    assert vmdefine.disk("vms/a,size=1024,ro=no") == {"volume": "vms/a", "size": 1024, "read_only": False}
    with pytest.raises(click.BadParameter, match="unknown option 'speed' \\(known: device, bus"):
        vmdefine.disk("vms/a,speed=9")
    assert vmdefine.nic("100") == {"network": 100}
    assert vmdefine.nic("7,mac=52:54:00:00:00:01,model=e1000e") == {
        "network": 7,
        "mac": "52:54:00:00:00:01",
        "model": "e1000e",
    }
    with pytest.raises(click.BadParameter, match="the network is its VNI, a number"):
        vmdefine.nic("lan")


def test_options_give_only_what_was_said():
    options = {"name": "web1", "memory": 64, "vcpus": None, "boot": (), "tags": ("a",), "limit": [], "autostart": False}
    assert vmdefine.from_options(options) == {
        "name": "web1",
        "memory_mib": 64,
        "tags": ["a"],
        "placement": {"node_limit": []},
    }
    full = vmdefine.from_options(
        {"name": "w", "memory": 64, "selector": "mem", "autostart": True, "method": "live", "max_downtime": 300}
    )
    assert full["placement"] == {"selector": "mem", "autostart": True}
    assert full["migration"] == {"method": "live", "max_downtime_ms": 300}
    with pytest.raises(click.UsageError, match="give --name"):
        vmdefine.from_options({"memory": 64})
    with pytest.raises(click.UsageError, match="give --memory"):
        vmdefine.from_options({"name": "w"})


def test_files_are_detected():
    assert vmdefine.from_file("f", "  <domain/>") == {"xml": "  <domain/>"}
    assert vmdefine.from_file("f", '{"name": "a", "memory_mib": 64}') == {"definition": {"name": "a", "memory_mib": 64}}
    assert vmdefine.from_file("f", "name: a\nmemory_mib: 64\ndescription: 2024-01-02\n") == {
        "definition": {"name": "a", "memory_mib": 64, "description": "2024-01-02"}
    }
    info = "name: a\nstate: stop\ndefinition:\n  name: a\n  memory_mib: 64\n"  # `pvc vm info --format yaml`
    assert vmdefine.from_file("f", info) == {"definition": {"name": "a", "memory_mib": 64}}
    with pytest.raises(Failure, match=r"f: line 2, column 11: not JSON, YAML or a domain XML: expected .,. or .\]."):
        vmdefine.from_file("f", "name: [a\nmemory_mib: 64\n")
    with pytest.raises(Failure, match="f: holds list, not a VM definition"):
        vmdefine.from_file("f", "- a\n")
    with pytest.raises(Failure, match="f: holds nothing"):
        vmdefine.from_file("f", "")
