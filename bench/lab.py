"""Benchmark: `pvc-lab up` to a formed, healthy cluster, for 1 and 3 nodes (median of --repeat runs), against a raw
baseline measured in the same run: booting one node's root with systemd-nspawn until pvc-node starts (no config).

Prints a table and writes bench/results/lab.json. Goal: 3 nodes healthy ≤ 5 min with the container backend.
Run as root: `.venv/bin/python bench/lab.py [--backend container|vm] [--repeat 3] [--nodes 1 3]`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvc.image.build import DEFAULT_OUT, build  # noqa: E402
from pvc.installer.labcontainer import Container, NodeSpec  # noqa: E402

BIN = Path(sys.executable).parent
GOAL_3_NODES_S = 300.0


def lab_env(workdir: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PVC_LAB_DIR": str(workdir / "lab"),
        "PVC_LAB_NS": "pvcbench",
        "PVC_CLIENT_DIR": str(workdir / "client"),
    }


def lab_up(workdir: Path, nodes: int, backend: str, squashfs: Path) -> float:
    env = lab_env(workdir)
    subprocess.run([str(BIN / "pvc-lab"), "down"], env=env, capture_output=True)
    t0 = time.monotonic()
    args = ["up", "--nodes", str(nodes), "--backend", backend, "--api-port", "17379", "--timeout", "1800"]
    if backend == "container":
        args += ["--squashfs", str(squashfs)]
    out = subprocess.run([str(BIN / "pvc-lab"), *args], env=env, capture_output=True, text=True)
    elapsed = time.monotonic() - t0
    try:
        if out.returncode != 0:
            raise SystemExit(f"pvc-lab up failed:\n{out.stdout}\n{out.stderr}")
        health = subprocess.run(
            [str(BIN / "pvc"), "-c", "lab", "cluster", "status", "--format", "json"],
            env=env,
            capture_output=True,
            text=True,
        )
        if health.returncode != 0 or json.loads(health.stdout).get("health") != "ok":
            raise SystemExit(f"cluster formed but not healthy: {health.stdout} {health.stderr}")
    finally:
        subprocess.run([str(BIN / "pvc-lab"), "down"], env=env, capture_output=True)
    return elapsed


def raw_boot(workdir: Path, squashfs: Path) -> float:
    """Baseline: the same root booted by nspawn until pvc-node.service prints its first line."""
    root = workdir / "root"
    root.mkdir(exist_ok=True)
    ns = "pvcbench-raw"
    subprocess.run(["ip", "netns", "add", ns], check=True)
    subprocess.run(["mount", "-o", "loop,ro", "-t", "squashfs", str(squashfs), str(root)], check=True)
    log = workdir / "raw.log"
    node = Container(NodeSpec(name="raw", netns=ns, root=str(root), console_log=str(log)))
    try:
        t0 = time.monotonic()
        node.start()
        while "looking for cluster.toml" not in log.read_text(errors="replace").rsplit("pvc-lab: power on", 1)[-1]:
            if time.monotonic() - t0 > 120:
                raise SystemExit("the raw boot did not reach pvc-node in 120 s")
            time.sleep(0.05)
        return time.monotonic() - t0
    finally:
        node.power_off()
        subprocess.run(["umount", str(root)])
        subprocess.run(["ip", "netns", "del", ns])


def main() -> None:
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
    print(f"{'measure':44} {'median':>8}  all runs")
    print(f"{'raw nspawn boot to pvc-node (baseline)':44} {results['raw_nspawn_boot_s']:7.1f}s")
    for n, r in results["runs"].items():
        goal = f"  (goal ≤ {GOAL_3_NODES_S:.0f} s)" if n == "3" else ""
        label = f"pvc-lab up --nodes {n} ({args.backend}) to healthy"
        print(f"{label:44} {r['median_s']:7.1f}s  {', '.join(f'{t:.1f}' for t in r['all_s'])}{goal}")
    out = ROOT / "bench" / "results" / f"lab-{args.backend}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
