"""Benchmark: the test guest (`pvc-image guest`): build times, disk size, and boot time under QEMU here.

1. cold build: an empty temporary cache directory (mmdebstrap from deb.debian.org, then the disk)   target ≤ 300 s
2. warm build: same inputs again, served from the cache                                                target: seconds
3. size: the compressed qcow2 and its virtual size
4. boot (median of --boots, each from a fresh overlay and a NoCloud seed): QEMU start → the serial console's login
   prompt, and → cloud-init's final message. TCG here (KVM where it boots a stock kernel, as the lab picks).

The host's load average is recorded with the boots: these machines are shared and TCG boot times follow the load.
Needs root and the host packages of ci/setup.sh. Prints a table and writes bench/results/guest.json.

Run from the repository root:
    .venv/bin/python -m bench.guest [--boots 3] [--cpus 2] [--keep]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import report
from pvc.image.guest import GuestArtifacts, build_guest
from pvc.image.run import remove_tree
from tests.harness.guest import (
    CLOUD_INIT_DONE,
    LOGIN_PROMPT,
    Guest,
    GuestSpec,
    meta_data,
    overlay_disk,
    seed_iso,
)
from tests.harness.procs import end_on_signals

TARGET_COLD_S = 300.0
BOOT_TIMEOUT_S = 900.0


def timed_build(label: str, **kwargs) -> tuple[float, GuestArtifacts]:
    print(f"== {label}", flush=True)
    start = time.monotonic()
    arts = build_guest(progress=lambda line: print(f"   {line}", flush=True), **kwargs)
    return time.monotonic() - start, arts


def boot_once(qcow2: Path, work: Path, n: int, cpus: int) -> dict:
    work.mkdir(parents=True)
    key = work / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    user_data = f"#cloud-config\nssh_authorized_keys:\n  - {key.with_suffix('.pub').read_text().strip()}\n"
    seed = seed_iso(
        work / "seed.iso", {"meta-data": meta_data(f"i-{secrets.token_hex(4)}", f"bench{n}"), "user-data": user_data}
    )
    spec = GuestSpec(disk=overlay_disk(qcow2, work / "disk.qcow2"), workdir=work, seed=seed, cpus=cpus)
    load = os.getloadavg()[0]
    with Guest(spec) as guest:
        login = guest.wait_for(LOGIN_PROMPT, BOOT_TIMEOUT_S)
        done = guest.wait_for(CLOUD_INIT_DONE, BOOT_TIMEOUT_S)
    print(f"   boot {n}: login prompt {login:.1f} s, cloud-init finished {done:.1f} s (load {load:.1f})", flush=True)
    return {"login_s": round(login, 1), "cloud_init_s": round(done, 1), "load": round(load, 2), "accel": spec.accel}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boots", type=int, default=3, help="boots to take the median of [3]")
    parser.add_argument("--cpus", type=int, default=2, help="guest vCPUs [2]")
    parser.add_argument("--keep", action="store_true", help="keep the temporary cache, outputs and boot folders")
    end_on_signals()  # a killed or interrupted run still stops its QEMU and removes its folders
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="pvc-bench-guest-", dir="/var/tmp"))
    common = {"out": work / "out", "cache_root": work / "cache"}
    try:
        cold, arts = timed_build("cold build (empty cache)", **common)
        assert not arts.cached
        warm, again = timed_build("warm build (same inputs)", **common)
        assert again.cached
        doc = json.loads(arts.manifest.read_text())
        qcow2 = doc["artifacts"]["pvc-guest.qcow2"]
        print(f"== {args.boots} boots, {args.cpus} vCPUs", flush=True)
        boots = [boot_once(arts.qcow2, work / f"boot{n}", n, args.cpus) for n in range(1, args.boots + 1)]
    finally:
        if not args.keep:
            remove_tree(work)

    login = statistics.median(b["login_s"] for b in boots)
    done = statistics.median(b["cloud_init_s"] for b in boots)
    results = {
        "cold_build_s": round(cold, 1),
        "cold_stage_s": doc["build_seconds"],
        "cold_target_s": TARGET_COLD_S,
        "warm_build_s": round(warm, 2),
        "qcow2_bytes": qcow2["size"],
        "qcow2_mib": round(qcow2["size"] / 2**20, 1),
        "virtual_bytes": qcow2["virtual_size"],
        "packages": len(doc["packages"]),
        "kernel": doc["kernel"],
        "accel": boots[0]["accel"],
        "cpus": args.cpus,
        "boot_login_median_s": login,
        "boot_cloud_init_median_s": done,
        "boots": boots,
    }
    rows = [
        (
            "cold build (empty cache)",
            f"{cold:.1f} s",
            f"≤ {TARGET_COLD_S:.0f} s " + ("ok" if cold <= TARGET_COLD_S else "MISSED"),
        ),
        *((f"  stage {k}", f"{v:.1f} s", "") for k, v in doc["build_seconds"].items()),
        ("warm build (cached)", f"{warm:.2f} s", ""),
        (
            "qcow2 (compressed) / virtual",
            f"{qcow2['size'] / 2**20:.0f} MiB / {qcow2['virtual_size'] / 2**30:.0f} GiB",
            "",
        ),
        ("packages", str(len(doc["packages"])), ""),
        (f"boot → login prompt ({results['accel']}, median)", f"{login:.1f} s", ""),
        (f"boot → cloud-init finished ({results['accel']}, median)", f"{done:.1f} s", ""),
        ("host load during the boots", ", ".join(f"{b['load']:.1f}" for b in boots), ""),
    ]
    print(report.table(("measure", "value", "target"), rows))
    report.write(results, report.default_out("guest"))


if __name__ == "__main__":
    main()
