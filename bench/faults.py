"""Benchmark of issue 12's faults: how long the cluster takes to recover from each, with its invariants checked.

1. lab: the faults of tests/system/test_faults.py on a 3-node container lab of the real image (labscenarios.py):
   ZooKeeper frozen on every node and on two of three, the ZooKeeper leader killed, the primary's pvcd frozen, a
   migration whose target freezes, an OSD killed during writes, a flooding console, a node cut from the cluster
   network and its return (rejoining flushed). Each row: the seconds to recovery, and whether every invariant held
   (no double run, no false fence, acknowledged ZooKeeper keys and disk writes intact; a VM of a dead node running
   again exactly once).
2. failover: node power loss → its VMs running elsewhere, on three simulated servers (bench/runtime.py's), with
   the defaults before issue 12 (keepalive 2 s, dead after 5), cluster.toml's defaults (keepalive 1 s, dead after
   4) and, if it differs, --tight KEEPALIVE,DEAD_AFTER; with --burners, all under that load.
3. soak: false fences over --soak seconds with --burners processes keeping every core busy, at the tighter timers
   (bench/runtime.py's soak): a node marked dead, stalled or fenced when nothing failed is a false alarm.

Prints a table and writes bench/results/faults.json. Run as root from the repository root, under the machine's
heavy-test lock: `flock /tmp/pvc-heavy.lock .venv/bin/python -m bench.faults [--only lab,failover,soak]
[--soak 600 --burners 2] [--tight 1,4]`.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import report
from bench import runtime as rt
from pvc.image.build import DEFAULT_OUT, build
from tests.harness import labscenarios as s
from tests.harness.procs import end_on_signals

GOAL_FAILOVER_S = 8.0
DEFAULT_TIMERS = rt.DEFAULT_TIMERS  # cluster.toml's defaults, as bench/runtime.py runs them
LAB_NS = "pvcbf"
LAB_API_PORT = 17378


def remember(run: dict[str, Any], found: dict[str, Any]) -> dict[str, Any]:
    """`found`, kept in `run` too (the partitioned node, for the fault that heals it)."""
    run.update(found)
    return found


# Each fault takes the world and what the run knows (its work folder, the partitioned node) and returns its figures.
Fault = Callable[[s.World, dict[str, Any]], dict[str, Any]]
FAULTS: list[tuple[str, Fault]] = [
    ("ZooKeeper frozen on every node 20 s → all nodes healthy", lambda w, _: s.zookeeper_frozen(w, list(s.NODES))),
    ("primary's pvcd frozen → new primary", lambda w, _: s.primary_frozen(w)),
    (
        "ZooKeeper frozen on 2 of 3 for 20 s → all nodes healthy",
        lambda w, _: s.zookeeper_frozen(w, ["node2", "node3"]),
    ),
    ("ZooKeeper leader killed → new leader", lambda w, _: s.zookeeper_leader_killed(w)),
    ("migration target frozen → aborted", lambda w, _: s.migration_target_frozen(w)),
    ("OSD killed during writes → all OSDs up", lambda w, _: s.osd_killed(w)),
    ("a console flooding 60 s → within its caps", lambda w, run: s.console_flood(w, run["workdir"])),
    ("node partitioned → its VM running elsewhere", lambda w, run: remember(run, s.node_partitioned(w))),
    ("partition healed → node rejoins flushed", lambda w, run: s.partitioned_node_rejoins(w, run["victim"])),
]


def lab_faults(workdir: Path) -> list[dict[str, Any]]:
    """Each fault once, in order, on one lab; a fault whose invariants fail is recorded as such and the next runs."""
    squashfs = build(Path(os.environ.get("PVC_IMAGE_OUT") or DEFAULT_OUT), "zstd", progress=print).squashfs
    labdir = s.labdir_for(workdir)
    results = []
    with s.world(workdir, labdir, os.environ.get("PVC_LAB_NS", LAB_NS) + "b", LAB_API_PORT, squashfs) as world:
        run: dict[str, Any] = {"workdir": workdir}
        for name, fault in FAULTS:
            t0 = time.monotonic()
            try:
                found = fault(world, run)
                results.append({"fault": name, "invariants": "held", **found})
            except AssertionError as exc:
                results.append({"fault": name, "invariants": f"broken: {str(exc)[:300]}"})
            results[-1]["total_s"] = time.monotonic() - t0
            print(results[-1], flush=True)
    return results


def failovers(workdir: Path, cache: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    keepalive, dead_after = (int(x) for x in args.tight.split(","))
    defaults = (DEFAULT_TIMERS.keepalive_interval, DEFAULT_TIMERS.dead_after)
    settings = [("previous defaults", 2, 5), ("defaults", *defaults)]
    if (keepalive, dead_after) != defaults:
        settings.append(("tight", keepalive, dead_after))
    out = []
    for label, ka, da in settings:
        run = argparse.Namespace(**{**vars(args), "keepalive": ka, "dead_after": da})
        with rt.burning(args.burners):
            times = [rt.failover(workdir, cache, run) for _ in range(args.repeat)]
        out.append({"timers": label, "keepalive": ka, "dead_after": da, "failover_s": times})
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="lab,failover,soak", help="which parts to run")
    parser.add_argument(
        "--tight",
        default=f"{DEFAULT_TIMERS.keepalive_interval},{DEFAULT_TIMERS.dead_after}",
        help="KEEPALIVE,DEAD_AFTER of the timers the soak runs (and the failover too, if not the defaults)",
    )
    parser.add_argument("--repeat", type=int, default=3, help="failovers per setting")
    parser.add_argument("--vms", type=int, default=2, help="VMs on the node that loses power")
    parser.add_argument("--session-ms", type=int, default=3000)
    parser.add_argument("--memory", type=int, default=64, help="MiB of each VM")
    parser.add_argument("--soak", type=int, default=600, help="seconds of the false-fence soak")
    parser.add_argument("--burners", type=int, default=os.cpu_count() or 2, help="processes keeping a core busy")
    parser.add_argument("--out", default=report.default_out("faults"))
    args = parser.parse_args()
    parts = set(args.only.split(","))
    end_on_signals()
    workdir = Path(tempfile.mkdtemp(prefix="pvc-bench-faults-"))
    cache = workdir / "cache"
    cache.mkdir()
    result: dict[str, Any] = {"args": vars(args)}
    rows: list[tuple[str, str, str]] = []
    try:
        if "lab" in parts:
            result["lab"] = lab_faults(workdir)
            rows += [
                (r["fault"], f"{r['recover_s']:.1f} s" if "recover_s" in r else "-", r["invariants"])
                for r in result["lab"]
            ]
        if "failover" in parts:
            result["failover"] = fo = failovers(workdir, cache, args)
            for f in fo:
                median = statistics.median(f["failover_s"])
                name = f"node power loss → VMs elsewhere (keepalive {f['keepalive']} s, dead after {f['dead_after']})"
                rows.append((name, f"{median:.1f} s", f"goal ≤ {GOAL_FAILOVER_S:.0f} s, {args.burners} burners"))
        if "soak" in parts:
            keepalive, dead_after = (int(x) for x in args.tight.split(","))
            run = argparse.Namespace(**{**vars(args), "keepalive": keepalive, "dead_after": dead_after})
            soaked = rt.soak(workdir, cache, run)  # it burns the cores itself
            result["soak"] = soaked
            rows.append(
                (
                    f"soak {args.soak} s at keepalive {keepalive} s, dead after {dead_after}, {args.burners} burners",
                    f"{len(soaked['nodes_marked'])} marked, {len(soaked['alarms'])} alarms",
                    f"oldest keepalive {soaked['oldest_keepalive_s']:.1f} s of {soaked['dead_after_s']:.0f} s",
                )
            )
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(report.table(("fault", "recovery", "invariants / notes"), rows))
    report.write(result, args.out)


if __name__ == "__main__":
    main()
