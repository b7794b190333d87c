"""Host resources for the keepalive (MiB, load)."""

from __future__ import annotations

import os


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
