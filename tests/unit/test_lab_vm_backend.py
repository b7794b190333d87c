"""The lab's vm backend's pure parts: the QEMU command line, the accelerator choice, the PXE DHCP range, NIC names."""

from __future__ import annotations

from pathlib import Path

import pytest

from pvc.installer.lab import pxe
from pvc.installer.lab import vm as labvm
from pvc.installer.lab.command import LabError
from pvc.installer.lab.state import Bmc, Disks, LabNode, Medium, Nic, Vm
from tests.harness.examples import example_cluster


def entry() -> LabNode:
    return LabNode(
        name="node1",
        id=1,
        netns="pvclab-node1",
        console_log="/lab/node1/console.log",
        dir="/lab/node1",
        disks=Disks(data="/lab/node1/data.img", osds=["/lab/node1/osd0.img"], config="/lab/node1/config.img"),
        nics=[
            Nic(name="enp0s16", bridge="up0", mac="52:54:00:5c:00:01"),
            Nic(name="enp0s17", bridge="cl0", mac="52:54:00:00:00:02"),
        ],
        ip="192.0.2.11",
        bmc=Bmc(address="192.0.2.101", port=623, username="admin", password="pw"),
    )


def vm(boot: str, **kw) -> Vm:
    return Vm.model_validate({"boot": boot, "accel": "tcg", "memory_mib": 3072, "smp": 2, "firmware": "bios"} | kw)


def test_usb_uefi_boots_the_stick_read_only_first_with_the_nodes_own_nvram():
    argv = labvm.qemu_argv(
        entry(),
        vm(
            "usb-uefi",
            firmware="uefi",
            ovmf_vars="/lab/node1/OVMF_VARS.fd",
            medium=Medium(kind="usb", path="/img/pvc-usb.img"),
        ),
    )
    line = " ".join(argv)
    assert f"if=pflash,format=raw,readonly=on,file={labvm.OVMF_CODE}" in line
    assert "if=pflash,format=raw,file=/lab/node1/OVMF_VARS.fd" in line
    assert "readonly=on,file=/img/pvc-usb.img" in line and "usb-storage,bus=xhci.0,drive=boot" in line
    assert "bootindex=0" in line and line.count("bootindex") == 1
    assert "-accel tcg,thread=multi" in line and "+ssse3" in line
    assert "file,id=console,path=/lab/node1/console.log,append=on" in line


def test_disks_carry_the_serials_the_example_selectors_match():
    line = " ".join(
        labvm.qemu_argv(entry(), vm("kernel", kernel={"kernel": "k", "initrd": "i", "append": "boot=live"}))
    )
    assert "serial=pvc-data-node1" in line and "serial=pvc-osd0-node1" in line and "serial=pvc-config-node1" in line
    assert "-kernel k -initrd i -append boot=live" in line


def test_nics_sit_at_the_slots_the_guest_names_and_only_the_first_netboots():
    argv = labvm.qemu_argv(entry(), vm("pxe-bios"))
    nics = [a for a in argv if a.startswith("virtio-net-pci")]
    assert nics[0] == "virtio-net-pci,netdev=n0,mac=52:54:00:5c:00:01,addr=0x10,bootindex=0"
    assert nics[1].endswith("addr=0x11,romfile=")
    assert "tap,id=n0,ifname=t1e0,script=no,downscript=no" in argv
    assert [labvm.nic_name(i) for i in range(3)] == ["enp0s16", "enp0s17", "enp0s18"]


def test_the_vm_examples_name_their_nics_as_the_guest_does():
    for name in ("lab-vm-1node", "lab-vm-3node"):
        cfg = example_cluster(name)
        assert [n.name for n in cfg.network.nics] == [labvm.nic_name(i) for i in range(3)]


def test_accelerator_override_and_pvm(monkeypatch):
    monkeypatch.setenv("PVC_LAB_ACCEL", "kvm")
    assert labvm.accelerator() == "kvm"
    monkeypatch.setenv("PVC_LAB_ACCEL", "hvf")
    with pytest.raises(LabError):
        labvm.accelerator()
    monkeypatch.delenv("PVC_LAB_ACCEL")
    assert labvm.accel_args("kvm") == ["-accel", "kvm", "-cpu", "host"]


def test_dhcp_range_avoids_every_used_address():
    cfg = example_cluster("lab-vm-3node")
    first, last = pxe.dhcp_range(cfg)
    used = {"192.0.2.11", "192.0.2.12", "192.0.2.13", "192.0.2.250", "192.0.2.254"}
    lo, hi = int(first.rsplit(".", 1)[1]), int(last.rsplit(".", 1)[1])
    assert lo < hi and not any(lo <= int(u.rsplit(".", 1)[1]) <= hi for u in used)
    conf = pxe.dnsmasq_conf(Path("/lab/pxe"), "up0", "192.0.2.254", 24, first, last)
    assert (
        "port=0" in conf and "interface=up0" in conf and "dhcp-boot=tag:ipxe,http://192.0.2.254:8080/lab.ipxe" in conf
    )
