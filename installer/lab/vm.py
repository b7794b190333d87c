"""The lab's `vm` backend: one node = one QEMU process booting the real boot media (direct kernel, the USB image or
the ISO under UEFI or BIOS, or PXE), its NICs on tap devices of the lab's bridges, its disks as virtio disks whose
serials make udev create /dev/disk/by-id/virtio-pvc-data-NODE and /dev/disk/by-id/virtio-pvc-osdI-NODE.

QEMU runs in the lab's switch namespace (where the taps are). Its serial port is appended to the node's console log,
which is where `pvc-lab up` and `pvc-lab status` read formation progress from.

Accelerator: KVM where it boots a stock kernel, TCG where it cannot (no /dev/kvm, or the nested PVM host of the
development machines, /sys/module/kvm_pvm, which hangs a Debian kernel); `PVC_LAB_ACCEL=kvm|tcg` overrides.

PXE boot modes use the lab's PXE services (pxe.py).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pvc.config import lab_hardware as hw
from pvc.config.schema import ClusterFile
from pvc.installer.lab import pxe
from pvc.installer.lab.command import LabError
from pvc.installer.lab.machine import Machine
from pvc.installer.lab.network import tap_name
from pvc.installer.lab.state import BOOT_MODES, LAB_DIR, KernelBoot, Lab, LabNode, Medium, Vm
from pvc.nodeos.daemon import hostinfo

if TYPE_CHECKING:
    from pvc.image.build import Artifacts

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
NIC_SLOT = 0x10  # NIC i sits at PCI slot 0x10+i of q35's root bus: the guest names it enp0s(16+i)
DISK_SLOT = 0x08  # data, OSDs, then the config disk from here on


def nic_name(index: int) -> str:
    """The name the image's udev gives NIC `index` (predictable names, q35 root bus: enp0s<slot>)."""
    return f"enp0s{NIC_SLOT + index}"


def accelerator() -> Literal["kvm", "tcg"]:
    forced = os.environ.get("PVC_LAB_ACCEL", "").strip().lower()
    if forced:
        if forced == "kvm":
            return "kvm"
        if forced == "tcg":
            return "tcg"
        raise LabError(f"PVC_LAB_ACCEL={forced}: use kvm or tcg")
    return hostinfo.accelerator("auto")  # pvcd's own choice on a node: KVM where it boots a kernel, else TCG


# QEMU's default CPU model (qemu64, the quickest under TCG) plus what Debian's Ceph needs: its erasure-code plugins
# pick an SSE3 build when CPUID says SSE3 and that build uses SSSE3 (pshufb): ceph-mon dies of SIGILL in
# gf_init_hard() on plain qemu64. With SSE4.1/4.2 and PCLMULQDQ it picks its SSE4 build, which TCG runs.
# Without SVM (qemu64 has it): TCG's emulated SVM gave the node a /dev/kvm, so libvirtd's first start probed KVM
# inside the emulator (2-3x slower than its TCG probe, and a probe libvirtd waits on with no deadline: the libvirt
# step's hang of issue 12). A node under TCG runs its VMs under TCG too.
TCG_CPU = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+pclmulqdq,-svm"


def accel_args(accel: str) -> list[str]:
    return ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", TCG_CPU]


def prepare_node(lab: Lab, node: LabNode, cfg: ClusterFile, artifacts: Artifacts, boot: str) -> Vm:
    """Everything needed to start this node's QEMU (and the lab's PXE services on the first node that needs
    them, recorded in `lab`)."""
    from pvc.image.recipe import Recipe

    if boot not in BOOT_MODES:
        raise LabError(f"unknown boot mode {boot} (one of {', '.join(BOOT_MODES)})")
    ndir = Path(node.dir)
    uefi = boot.endswith("-uefi")
    vm = Vm(
        boot=boot,
        accel=accelerator(),
        memory_mib=int(os.environ.get("PVC_LAB_VM_MEMORY", "3072")),
        smp=int(os.environ.get("PVC_LAB_VM_SMP", "2" if len(cfg.nodes) == 1 else "1")),
        firmware="uefi" if uefi else "bios",
    )
    if uefi:
        for path in (OVMF_CODE, OVMF_VARS):
            if not path.exists():
                raise LabError(f"{path} is missing: apt-get install ovmf (bash ci/setup.sh)")
        vars_copy = ndir / "OVMF_VARS.fd"  # the node's own NVRAM, kept across its power cycles
        shutil.copyfile(OVMF_VARS, vars_copy)
        vm.ovmf_vars = str(vars_copy)
    if boot == "kernel":
        vm.kernel = KernelBoot(kernel=str(artifacts.kernel), initrd=str(artifacts.initrd), append=Recipe().kernel_args)
        vm.medium = Medium(kind="disk", path=str(artifacts.iso))  # live-boot finds /live/filesystem.squashfs on it
    elif boot.startswith("usb-"):
        vm.medium = Medium(kind="usb", path=str(artifacts.usb))
    elif boot.startswith("iso-"):
        vm.medium = Medium(kind="cdrom", path=str(artifacts.iso))
    elif lab.pxe is None:
        lab.pxe = pxe.start(lab, cfg, artifacts, ndir.parent)
    vm.argv = qemu_argv(node, vm)
    return vm


def qemu_argv(node: LabNode, vm: Vm) -> list[str]:
    """The QEMU command line of one node (a pure function of its lab.json record)."""
    name = node.name
    argv = ["qemu-system-x86_64", "-name", f"pvc-lab-{name}", "-machine", "q35", *accel_args(vm.accel)]
    argv += ["-smp", str(vm.smp), "-m", str(vm.memory_mib), "-nodefaults", "-display", "none"]
    argv += ["-chardev", f"file,id=console,path={node.console_log},append=on", "-serial", "chardev:console"]
    if vm.firmware == "uefi":
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"]
        argv += ["-drive", f"if=pflash,format=raw,file={vm.ovmf_vars}"]
    if vm.kernel:
        k = vm.kernel
        argv += ["-kernel", k.kernel, "-initrd", k.initrd, "-append", k.append]
    medium = vm.medium
    if medium is not None:
        drive = f"id=boot,if=none,format=raw,readonly=on,file={medium.path}"
        if medium.kind == "usb":
            argv += ["-device", "qemu-xhci,id=xhci", "-drive", drive]
            argv += ["-device", "usb-storage,bus=xhci.0,drive=boot,removable=on,bootindex=0"]
        elif medium.kind == "cdrom":
            argv += ["-drive", drive + ",media=cdrom", "-device", "ide-cd,bus=ide.0,drive=boot,bootindex=0"]
        else:
            argv += ["-drive", drive, "-device", f"virtio-blk-pci,drive=boot,addr={DISK_SLOT - 1:#x}"]
    disks = node.disks
    serials = [("data", disks.data, hw.disk_serial("data", name))]
    serials += [(f"osd{i}", path, hw.disk_serial(f"osd{i}", name)) for i, path in enumerate(disks.osds)]
    serials += [("config", disks.config, hw.disk_serial("config", name))]
    for i, (disk_id, path, serial) in enumerate(serials):
        argv += ["-drive", f"id={disk_id},if=none,format=raw,cache=unsafe,discard=unmap,file={path}"]
        argv += ["-device", f"virtio-blk-pci,drive={disk_id},serial={serial[:20]},addr={DISK_SLOT + i:#x}"]
    netboot = vm.boot.startswith("pxe-")
    for i, nic in enumerate(node.nics):
        argv += ["-netdev", f"tap,id=n{i},ifname={tap_name(node.id, i)},script=no,downscript=no"]
        dev = f"virtio-net-pci,netdev=n{i},mac={nic.mac},addr={NIC_SLOT + i:#x}"
        if netboot and i == 0:
            dev += ",bootindex=0"  # the upstream NIC, where the lab's dnsmasq answers
        elif netboot:
            dev += ",romfile="  # only the boot NIC carries an option ROM
        argv += ["-device", dev]
    return argv


# -- ssh -------------------------------------------------------------------------------------------------------------
def ssh_argv(lab: Lab, node: LabNode, command: list[str], identity: str | None, user: str | None) -> list[str]:
    """ssh to a vm node's upstream address from inside the lab's namespace, as a [[users]] entry of cluster.toml
    (the image has no other login: root has no key and no password)."""
    from pvc.installer.lab.up import load_config

    if user is None:
        cfg = load_config(Path(lab.config))
        if not cfg.users:
            raise LabError("cluster.toml has no [[users]]: a vm node can only be reached by ssh as one of them")
        user = cfg.users[0].name
    # The nodes keep their host keys on PVCDATA: the first connection to a node learns its key (accept-new), every
    # later one, after a reboot too, checks it, in the lab's own known_hosts (removed by `pvc-lab down`).
    known_hosts = LAB_DIR / "known_hosts"
    argv = ["ip", "netns", "exec", lab.lab_ns, "ssh", "-o", "StrictHostKeyChecking=accept-new"]
    argv += ["-o", f"UserKnownHostsFile={known_hosts}", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]
    if identity:
        argv += ["-i", identity, "-o", "IdentitiesOnly=yes"]
    if not command:
        argv.append("-t")
    return [*argv, f"{user}@{node.ip}", *command]


# -- one node --------------------------------------------------------------------------------------------------------
class VmNode(Machine):
    """One QEMU process; power on = start it, hard power off = SIGKILL it. A guest reboot is a reset inside the same
    process; a guest power-off ends it (the BMC then reports power off). init_pid is the QEMU process: there is no
    guest PID on the host, and `pvc-lab ssh` uses ssh for vm nodes."""

    def __init__(self, lab: Lab, node: LabNode) -> None:
        super().__init__(node.name, lab.lab_ns, node.console_log)
        if node.vm is None:
            raise LabError(f"lab.json has no QEMU settings for node {node.name}")
        self.qemu_argv = list(node.vm.argv)

    def argv(self) -> list[str]:
        return list(self.qemu_argv)
