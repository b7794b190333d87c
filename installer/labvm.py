"""The lab's `vm` backend: one node = one QEMU process booting the real boot media (direct kernel, the USB image or
the ISO under UEFI or BIOS, or PXE), its NICs on tap devices of the lab's bridges, its disks as virtio disks whose
serials make udev create /dev/disk/by-id/virtio-pvc-data-NODE and /dev/disk/by-id/virtio-pvc-osdI-NODE.

QEMU runs in the lab's switch namespace (where the taps are). Its serial port is appended to the node's console log,
which is where `pvc-lab up` and `pvc-lab status` read formation progress from.

Accelerator: KVM where it boots a stock kernel, TCG where it cannot (no /dev/kvm, or the nested PVM host of the
development machines, /sys/module/kvm_pvm, which hangs a Debian kernel); `PVC_LAB_ACCEL=kvm|tcg` overrides.

PXE: dnsmasq (DHCP + TFTP, no DNS) on the upstream bridge inside the switch namespace, and a small HTTP server on the
upstream gateway address serving vmlinuz, initrd.img, filesystem.squashfs and the image's boot.ipxe. Both belong
to the lab (their PIDs are in lab.json; `pvc-lab down` ends them).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from pvc.installer.labmachine import Machine, enter_netns
from pvc.installer.labnet import LabError, tap_name

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
IPXE_EFI = Path("/usr/lib/ipxe/ipxe.efi")
BOOT_MODES = ("kernel", "usb-uefi", "usb-bios", "iso-uefi", "iso-bios", "pxe-bios", "pxe-uefi")
PXE_HTTP_PORT = 8080
NIC_SLOT = 0x10  # NIC i sits at PCI slot 0x10+i of q35's root bus: the guest names it enp0s(16+i)
DISK_SLOT = 0x08  # data, OSDs, then the config disk from here on


def nic_name(index: int) -> str:
    """The name the image's udev gives NIC `index` (predictable names, q35 root bus: enp0s<slot>)."""
    return f"enp0s{NIC_SLOT + index}"


def accelerator() -> str:
    forced = os.environ.get("PVC_LAB_ACCEL", "").strip().lower()
    if forced:
        if forced not in ("kvm", "tcg"):
            raise LabError(f"PVC_LAB_ACCEL={forced}: use kvm or tcg")
        return forced
    if Path("/sys/module/kvm_pvm").exists() or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    return "kvm"


# QEMU's default CPU model (qemu64, the quickest under TCG) plus what Debian's Ceph needs: its erasure-code plugins
# pick an SSE3 build when CPUID says SSE3 and that build uses SSSE3 (pshufb): ceph-mon dies of SIGILL in
# gf_init_hard() on plain qemu64. With SSE4.1/4.2 and PCLMULQDQ it picks its SSE4 build, which TCG runs.
TCG_CPU = "qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt,+pclmulqdq"


def accel_args(accel: str) -> list[str]:
    return ["-accel", "kvm", "-cpu", "host"] if accel == "kvm" else ["-accel", "tcg,thread=multi", "-cpu", TCG_CPU]


def _upstream(cfg) -> tuple[str, ipaddress.IPv4Network]:  # type: ignore[no-untyped-def]
    up = cfg.network.upstream
    return str(up.gateway), ipaddress.ip_network(str(up.subnet))


def prepare_node(lab: dict, entry: dict, artifacts, boot: str) -> dict:  # type: ignore[no-untyped-def]
    """Plain data for lab.json: everything needed to start this node's QEMU (and the lab's PXE services on the
    first node that needs them)."""
    from pvc.image.recipe import Recipe
    from pvc.installer.lab import load_config

    if boot not in BOOT_MODES:
        raise LabError(f"unknown boot mode {boot} (one of {', '.join(BOOT_MODES)})")
    cfg = load_config(Path(lab["config"]))
    ndir = Path(entry["dir"])
    uefi = boot.endswith("-uefi")
    vm: dict = {
        "boot": boot,
        "accel": accelerator(),
        "memory_mib": int(os.environ.get("PVC_LAB_VM_MEMORY", "3072")),
        "smp": int(os.environ.get("PVC_LAB_VM_SMP", "2" if len(cfg.nodes) == 1 else "1")),
        "firmware": "uefi" if uefi else "bios",
        "ovmf_vars": None,
        "kernel": None,
        "medium": None,
    }
    if uefi:
        for path in (OVMF_CODE, OVMF_VARS):
            if not path.exists():
                raise LabError(f"{path} is missing: apt-get install ovmf (bash ci/setup.sh)")
        vars_copy = ndir / "OVMF_VARS.fd"  # the node's own NVRAM, kept across its power cycles
        shutil.copyfile(OVMF_VARS, vars_copy)
        vm["ovmf_vars"] = str(vars_copy)
    if boot == "kernel":
        vm["kernel"] = {
            "kernel": str(artifacts.kernel),
            "initrd": str(artifacts.initrd),
            "append": Recipe().kernel_args,
        }
        vm["medium"] = {"kind": "disk", "path": str(artifacts.iso)}  # live-boot finds /live/filesystem.squashfs on it
    elif boot.startswith("usb-"):
        vm["medium"] = {"kind": "usb", "path": str(artifacts.usb)}
    elif boot.startswith("iso-"):
        vm["medium"] = {"kind": "cdrom", "path": str(artifacts.iso)}
    else:
        if "pxe" not in lab:
            lab["pxe"] = start_pxe(lab, cfg, artifacts, ndir.parent)
    vm["argv"] = qemu_argv(entry, vm)
    return vm


def qemu_argv(entry: dict, vm: dict) -> list[str]:
    """The QEMU command line of one node (a pure function of the lab.json entry)."""
    name = entry["name"]
    argv = ["qemu-system-x86_64", "-name", f"pvc-lab-{name}", "-machine", "q35", *accel_args(vm["accel"])]
    argv += ["-smp", str(vm["smp"]), "-m", str(vm["memory_mib"]), "-nodefaults", "-display", "none"]
    argv += ["-chardev", f"file,id=console,path={entry['console_log']},append=on", "-serial", "chardev:console"]
    if vm["firmware"] == "uefi":
        argv += ["-drive", f"if=pflash,format=raw,readonly=on,file={OVMF_CODE}"]
        argv += ["-drive", f"if=pflash,format=raw,file={vm['ovmf_vars']}"]
    if vm["kernel"]:
        k = vm["kernel"]
        argv += ["-kernel", k["kernel"], "-initrd", k["initrd"], "-append", k["append"]]
    medium = vm["medium"]
    if medium is not None:
        drive = f"id=boot,if=none,format=raw,readonly=on,file={medium['path']}"
        if medium["kind"] == "usb":
            argv += ["-device", "qemu-xhci,id=xhci", "-drive", drive]
            argv += ["-device", "usb-storage,bus=xhci.0,drive=boot,removable=on,bootindex=0"]
        elif medium["kind"] == "cdrom":
            argv += ["-drive", drive + ",media=cdrom", "-device", "ide-cd,bus=ide.0,drive=boot,bootindex=0"]
        else:
            argv += ["-drive", drive, "-device", f"virtio-blk-pci,drive=boot,addr={DISK_SLOT - 1:#x}"]
    disks = entry["disks"]
    serials = [("data", disks["data"], f"pvc-data-{name}")]
    serials += [(f"osd{i}", path, f"pvc-osd{i}-{name}") for i, path in enumerate(disks["osds"])]
    serials += [("config", disks["config"], f"pvc-config-{name}")]
    for i, (disk_id, path, serial) in enumerate(serials):
        argv += ["-drive", f"id={disk_id},if=none,format=raw,cache=unsafe,discard=unmap,file={path}"]
        argv += ["-device", f"virtio-blk-pci,drive={disk_id},serial={serial[:20]},addr={DISK_SLOT + i:#x}"]
    pxe = vm["boot"].startswith("pxe-")
    for i, (_, _, mac) in enumerate(entry["nics"]):
        argv += ["-netdev", f"tap,id=n{i},ifname={tap_name(entry['id'], i)},script=no,downscript=no"]
        dev = f"virtio-net-pci,netdev=n{i},mac={mac},addr={NIC_SLOT + i:#x}"
        if pxe and i == 0:
            dev += ",bootindex=0"  # the upstream NIC, where the lab's dnsmasq answers
        elif pxe:
            dev += ",romfile="  # only the boot NIC carries an option ROM
        argv += ["-device", dev]
    return argv


# -- PXE: dnsmasq (DHCP, TFTP) and an HTTP server in the switch namespace ---------------------------------------------
def dhcp_range(cfg) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """24 free addresses of the upstream subnet (not a node, the floating IP, the gateway or a BMC)."""
    gateway, subnet = _upstream(cfg)
    used = {gateway, str(cfg.network.upstream.floating_ip)}
    for node in cfg.nodes:
        used.add(str(node.ip.upstream))
        if node.ipmi is not None:
            used.add(str(node.ipmi.address))
    hosts = [str(h) for h in subnet.hosts()]
    start = len(hosts) // 2
    free = [h for h in hosts[start:] + hosts[:start] if h not in used]
    if len(free) < 4:
        raise LabError(f"the upstream subnet {subnet} has no room for the lab's PXE DHCP range")
    block = free[: min(24, len(free))]
    return block[0], block[-1]


def dnsmasq_conf(pxe_dir: Path, bridge: str, gateway: str, prefix_len: int, first: str, last: str) -> str:
    netmask = str(ipaddress.ip_network(f"0.0.0.0/{prefix_len}").netmask)
    return "\n".join(
        [
            "port=0",  # DHCP and TFTP only, no DNS
            f"interface={bridge}",
            "bind-interfaces",
            "user=root",
            f"dhcp-range={first},{last},{netmask},1h",
            f"dhcp-leasefile={pxe_dir / 'dnsmasq.leases'}",
            "dhcp-authoritative",
            "log-dhcp",
            "log-facility=-",  # to stderr, i.e. pxe.log
            "enable-tftp",
            f"tftp-root={pxe_dir / 'tftp'}",
            # iPXE (qemu's NIC ROM under SeaBIOS, or ipxe.efi) gets the lab's script over HTTP; a UEFI PXE client
            # (OVMF, arch 7 or 9) first gets ipxe.efi over TFTP.
            "dhcp-userclass=set:ipxe,iPXE",
            "dhcp-match=set:efi,option:client-arch,7",
            "dhcp-match=set:efi,option:client-arch,9",
            f"dhcp-boot=tag:ipxe,http://{gateway}:{PXE_HTTP_PORT}/lab.ipxe",
            "dhcp-boot=tag:!ipxe,tag:efi,ipxe.efi",
            "",
        ]
    )


def lab_ipxe(gateway: str) -> str:
    """The lab's entry script: where the image's files are, then the image's own boot.ipxe. BOOTIF tells live-boot
    which NIC to bring up for fetching the squashfs (the other NICs have no DHCP). Under UEFI, iPXE hands the initrd
    to the kernel's EFI stub as a file, which the stub loads only when `initrd=NAME` is on the command line (without
    it: "VFS: Unable to mount root fs"); under BIOS the argument is ignored."""
    return (
        "#!ipxe\n"
        f"set base http://{gateway}:{PXE_HTTP_PORT}\n"
        "set pvc_args BOOTIF=01-${netX/mac:hexhyp}\n"
        "iseq ${platform} efi && set pvc_args ${pvc_args} initrd=initrd.img ||\n"
        "chain ${base}/boot.ipxe\n"
    )


def _in_netns(ns: str):  # type: ignore[no-untyped-def]
    return lambda: enter_netns(ns)


def start_pxe(lab: dict, cfg, artifacts, labdir: Path) -> dict:  # type: ignore[no-untyped-def]
    if shutil.which("dnsmasq") is None:
        raise LabError("dnsmasq is not installed: apt-get install dnsmasq-base (bash ci/setup.sh)")
    pxe_dir = labdir / "pxe"
    (pxe_dir / "tftp").mkdir(parents=True, exist_ok=True)
    (pxe_dir / "http").mkdir(parents=True, exist_ok=True)
    if IPXE_EFI.exists():
        shutil.copyfile(IPXE_EFI, pxe_dir / "tftp" / "ipxe.efi")
    for src in (artifacts.kernel, artifacts.initrd, artifacts.squashfs, artifacts.ipxe):
        link = pxe_dir / "http" / Path(src).name
        link.unlink(missing_ok=True)
        link.symlink_to(Path(src).resolve())
    gateway, subnet = _upstream(cfg)
    (pxe_dir / "http" / "lab.ipxe").write_text(lab_ipxe(gateway))
    first, last = dhcp_range(cfg)
    bridge = lab["net"]["bridges"]["upstream"]
    conf = pxe_dir / "dnsmasq.conf"
    conf.write_text(dnsmasq_conf(pxe_dir, bridge, gateway, subnet.prefixlen, first, last))
    log = open(pxe_dir / "pxe.log", "ab")  # noqa: SIM115 - handed to the children
    common = {"stdout": log, "stderr": subprocess.STDOUT, "stdin": subprocess.DEVNULL, "start_new_session": True}
    dns = subprocess.Popen(
        ["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}"], preexec_fn=_in_netns(lab["lab_ns"]), **common
    )
    http = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(PXE_HTTP_PORT),
            "--bind",
            gateway,
            "--directory",
            str(pxe_dir / "http"),
        ],
        preexec_fn=_in_netns(lab["lab_ns"]),
        **common,
    )
    log.close()
    time.sleep(0.5)
    for proc, what in ((dns, "dnsmasq"), (http, "the PXE HTTP server")):
        if proc.poll() is not None:
            stop_pxe({"pxe": {"pids": [dns.pid, http.pid]}})
            tail = (pxe_dir / "pxe.log").read_text(errors="replace")[-2000:]
            raise LabError(f"{what} did not start:\n{tail}")
    return {
        "dir": str(pxe_dir),
        "pids": [dns.pid, http.pid],
        "dhcp_range": [first, last],
        "url": f"http://{gateway}:{PXE_HTTP_PORT}",
    }


def stop_pxe(lab: dict) -> None:
    for pid in (lab.get("pxe") or {}).get("pids", []):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)


# -- ssh -------------------------------------------------------------------------------------------------------------
def ssh_argv(lab: dict, node: dict, command: list[str], identity: str | None, user: str | None) -> list[str]:
    """ssh to a vm node's upstream address from inside the lab's namespace, as a [[users]] entry of cluster.toml
    (the image has no other login: root has no key and no password)."""
    from pvc.installer.lab import load_config

    if user is None:
        cfg = load_config(Path(lab["config"]))
        if not cfg.users:
            raise LabError("cluster.toml has no [[users]]: a vm node can only be reached by ssh as one of them")
        user = cfg.users[0].name
    argv = ["ip", "netns", "exec", lab["lab_ns"], "ssh", "-o", "StrictHostKeyChecking=no"]
    argv += ["-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=10"]
    if identity:
        argv += ["-i", identity, "-o", "IdentitiesOnly=yes"]
    if not command:
        argv.append("-t")
    return [*argv, f"{user}@{node['ip']}", *command]


# -- one node --------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class VmSpec:
    name: str
    netns: str
    console_log: str
    argv: tuple[str, ...]


class VmNode(Machine):
    """One QEMU process; power on = start it, hard power off = SIGKILL it. A guest reboot is a reset inside the same
    process; a guest power-off ends it (the BMC then reports power off). init_pid is the QEMU process: there is no
    guest PID on the host, and `pvc-lab ssh` uses ssh for vm nodes."""

    def __init__(self, lab: dict, node: dict) -> None:
        super().__init__(node["name"], lab["lab_ns"], node["console_log"])
        self.spec = VmSpec(node["name"], lab["lab_ns"], node["console_log"], tuple(node["vm"]["argv"]))

    def argv(self) -> list[str]:
        return list(self.spec.argv)
