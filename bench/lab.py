"""Benchmark: `pvc-lab up` to a formed, healthy cluster, for 1 and 3 nodes (median of --repeat runs), against a raw
baseline measured in the same run: booting one node's root with systemd-nspawn until pvc-node starts (no config).

Prints a table and writes bench/results/lab.json. Goal: 3 nodes healthy ≤ 5 min with the container backend.
Run as root, from the repository root: `.venv/bin/python -m bench.lab [--backend container|vm] [--repeat 3]
[--nodes 1 3]`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from bench import report
from pvc.image.build import DEFAULT_OUT, build
from pvc.installer.lab.container import Container, ContainerSpec
from pvc.installer.lab.machine import since_power_on
from pvc.nodeos.boot import console
from tests.harness.labctl import Lab
from tests.harness.procs import end_on_signals

GOAL_3_NODES_S = 300.0


def lab_up(workdir: Path, nodes: int, backend: str, squashfs: Path) -> float:
    lab = Lab(workdir / "lab", "pvcbench", 17379, workdir / "client")
    lab.run("down", check=False)
    args = ["up", "--nodes", str(nodes), "--backend", backend, "--api-port", "17379", "--timeout", "1800"]
    if backend == "container":
        args += ["--squashfs", str(squashfs)]
    try:
        t0 = time.monotonic()
        out = lab.run(*args, timeout=2400, check=False)
        elapsed = time.monotonic() - t0
        if out.returncode != 0:
            raise SystemExit(f"pvc-lab up failed:\n{out.stdout}\n{out.stderr}")
        health = lab.pvc("cluster", "status", "--format", "json")
        if health.returncode != 0 or json.loads(health.stdout).get("health") != "ok":
            raise SystemExit(f"cluster formed but not healthy: {health.stdout} {health.stderr}")
    finally:
        lab.run("down", check=False)
    return elapsed


def raw_boot(workdir: Path, squashfs: Path) -> float:
    """Baseline: the same root booted by nspawn until pvc-node.service prints its first line."""
    root = workdir / "root"
    root.mkdir(exist_ok=True)
    ns = "pvcbench-raw"
    log = workdir / "raw.log"
    node = Container(ContainerSpec(name="raw", netns=ns, root=str(root), console_log=str(log)))
    try:
        subprocess.run(["ip", "netns", "add", ns], check=True)
        subprocess.run(["mount", "-o", "loop,ro", "-t", "squashfs", str(squashfs), str(root)], check=True)
        t0 = time.monotonic()
        node.start()
        while console.SEARCHING not in since_power_on(log.read_text(errors="replace")):
            if time.monotonic() - t0 > 120:
                raise SystemExit("the raw boot did not reach pvc-node in 120 s")
            time.sleep(0.05)
        return time.monotonic() - t0
    finally:
        node.power_off()
        subprocess.run(["umount", str(root)], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def main() -> None:
    end_on_signals()  # a killed or interrupted run still takes its lab down
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=["container", "vm"], default="container")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--nodes", type=int, nargs="+", default=[1, 3])
    args = ap.parse_args()
    squashfs = Path(build(DEFAULT_OUT, progress=lambda m: None).squashfs)
    results: dict = {"backend": args.backend, "repeat": args.repeat, "goal_3_nodes_s": GOAL_3_NODES_S, "runs": {}}
    with tempfile.TemporaryDirectory(prefix="pvc-bench-lab.") as tmp:
        work = Path(tmp)
        results["raw_nspawn_boot_s"] = statistics.median(raw_boot(work, squashfs) for _ in range(args.repeat))
        for n in args.nodes:
            times = [lab_up(work, n, args.backend, squashfs) for _ in range(args.repeat)]
            results["runs"][str(n)] = {"median_s": statistics.median(times), "all_s": times}
    rows = [("raw nspawn boot to pvc-node (baseline)", f"{results['raw_nspawn_boot_s']:.1f}s", "", "")]
    for n, r in results["runs"].items():
        goal = f"≤ {GOAL_3_NODES_S:.0f} s" if n == "3" else ""
        label = f"pvc-lab up --nodes {n} ({args.backend}) to healthy"
        rows.append((label, f"{r['median_s']:.1f}s", ", ".join(f"{t:.1f}" for t in r["all_s"]), goal))
    print(report.table(["measure", "median", "all runs", "goal"], rows))
    report.write(results, report.default_out(f"lab-{args.backend}"))


if __name__ == "__main__":
    main()
