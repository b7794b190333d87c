"""The vm backend's PXE services: dnsmasq (DHCP + TFTP, no DNS) on the upstream bridge inside the switch namespace,
and a small HTTP server on the upstream gateway address serving vmlinuz, initrd.img, filesystem.squashfs and the
image's boot.ipxe. Both belong to the lab (their PIDs are in lab.json; `pvc-lab down` ends them).
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from pvc.config.schema import ClusterFile
from pvc.installer.lab.command import LabError, spawn
from pvc.installer.lab.machine import enter_netns
from pvc.installer.lab.state import Lab, Pxe

if TYPE_CHECKING:
    from pvc.image.build import Artifacts

IPXE_EFI = Path("/usr/lib/ipxe/ipxe.efi")
HTTP_PORT = 8080


def _upstream(cfg: ClusterFile) -> tuple[str, ipaddress.IPv4Network | ipaddress.IPv6Network]:
    up = cfg.network.upstream
    return str(up.gateway), ipaddress.ip_network(str(up.subnet))


def dhcp_range(cfg: ClusterFile) -> tuple[str, str]:
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
            f"dhcp-boot=tag:ipxe,http://{gateway}:{HTTP_PORT}/lab.ipxe",
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
        f"set base http://{gateway}:{HTTP_PORT}\n"
        "set pvc_args BOOTIF=01-${netX/mac:hexhyp}\n"
        "iseq ${platform} efi && set pvc_args ${pvc_args} initrd=initrd.img ||\n"
        "chain ${base}/boot.ipxe\n"
    )


def _in_netns(ns: str) -> Callable[[], None]:
    return lambda: enter_netns(ns)


def start(lab: Lab, cfg: ClusterFile, artifacts: Artifacts, labdir: Path) -> Pxe:
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
    bridge = lab.bridges["upstream"]
    conf = pxe_dir / "dnsmasq.conf"
    conf.write_text(dnsmasq_conf(pxe_dir, bridge, gateway, subnet.prefixlen, first, last))
    log = pxe_dir / "pxe.log"
    dns = spawn(["dnsmasq", "--keep-in-foreground", f"--conf-file={conf}"], log, _in_netns(lab.lab_ns))
    http_argv = [sys.executable, "-m", "http.server", str(HTTP_PORT), "--bind", gateway]
    http = spawn([*http_argv, "--directory", str(pxe_dir / "http")], log, _in_netns(lab.lab_ns))
    time.sleep(0.5)
    for proc, what in ((dns, "dnsmasq"), (http, "the PXE HTTP server")):
        if proc.poll() is not None:
            stop([dns.pid, http.pid])
            tail = (pxe_dir / "pxe.log").read_text(errors="replace")[-2000:]
            raise LabError(f"{what} did not start:\n{tail}")
    return Pxe(
        dir=str(pxe_dir), pids=[dns.pid, http.pid], dhcp_range=(first, last), url=f"http://{gateway}:{HTTP_PORT}"
    )


def stop(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, 0)
