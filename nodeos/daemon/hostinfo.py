"""Facts about this host: resources for the keepalive (MiB, load), and how it can run VMs (the accelerator)."""

from __future__ import annotations

import os
from pathlib import Path

from pvc.config.choices import Accelerator

KVM_DEVICE = "/dev/kvm"
PVM_MODULE = "/sys/module/kvm_pvm"  # a PVM nested hypervisor: its /dev/kvm starts firmware but hangs a Linux kernel


def accelerator(setting: str = "auto", kvm_device: str = KVM_DEVICE, pvm_module: str = PVM_MODULE) -> Accelerator:
    """How this host runs VMs: `setting` (cluster.toml [vm] accelerator) when it is 'kvm' or 'tcg'; for 'auto',
    KVM when /dev/kvm is usable and this host is not a PVM guest-of-guest, else TCG."""
    if setting in ("kvm", "tcg"):
        return setting  # type: ignore[return-value]
    if setting != "auto":
        raise ValueError(f"accelerator {setting!r} is none of auto, kvm, tcg")
    if Path(pvm_module).exists() or not os.access(kvm_device, os.R_OK | os.W_OK):
        return "tcg"
    return "kvm"


def meminfo(path: str = "/proc/meminfo") -> dict[str, int]:
    out = {}
    with open(path) as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                out[key] = int(parts[0]) // 1024  # kB -> MiB
    return out


def host() -> dict[str, float]:
    mem = meminfo()
    total, free = mem.get("MemTotal", 0), mem.get("MemAvailable", mem.get("MemFree", 0))
    return {
        "mem_total": total,
        "mem_free": free,
        "mem_used": total - free,
        "cpus": os.cpu_count() or 1,
        "load": round(os.getloadavg()[0], 2),
    }
