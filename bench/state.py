"""Benchmark: the state layer with 1 000 VMs in a real ZooKeeper — define, find by name, find by UUID.

Defining a VM and finding one by name read the name index (one znode), so neither grows with the number of VMs: the
table compares the first and the last 100 defines, and lookups with every VM defined. Baseline in the same run: one
plain read of one znode (what a lookup costs at least). Prints a table and writes bench/results/state.json.
Targets (not test assertions): find by name ≤ 3 reads' time, last-100 defines' median ≤ 2× the first 100's.

Ports from PVC_TEST_PORT_BASE (tests/harness/ports.py). Run from the repository root:
    .venv/bin/python -m bench.state [--vms 1000] [--lookups 300]
"""

from __future__ import annotations

import argparse
import functools
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from bench import report
from pvc.nodeos.state import layout
from pvc.nodeos.state.migrations import ensure_schema
from pvc.nodeos.state.models import VmSpec
from pvc.nodeos.state.store import ClusterState, make_client
from tests.harness.cluster import JOIN_KEY, tiny_vm
from tests.harness.ports import BENCH_PORT
from tests.harness.procs import end_on_signals
from tests.harness.zookeeper import ZooKeeper


def ms(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def stats(samples: list[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"median_ms": statistics.median(ordered), "p99_ms": ordered[int(len(ordered) * 0.99) - 1]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--lookups", type=int, default=300)
    parser.add_argument("--port", type=int, default=BENCH_PORT + 40, help="ZooKeeper's")
    parser.add_argument("--out", default=report.default_out("state"))
    args = parser.parse_args()
    end_on_signals()  # a killed or interrupted run still stops its ZooKeeper
    work = Path(tempfile.mkdtemp(prefix="pvc-bench-state-"))
    zk = client = None
    try:
        zk = ZooKeeper(work / "zk", "127.0.0.1", args.port)
        zk.wait_ready()
        client = make_client(zk.hosts, user="pvc", password="bench", timeout=10)
        client.start(timeout=10)
        state = ClusterState(client)
        ensure_schema(state, JOIN_KEY)
        defines, names, uuids = [], [], []
        started = time.perf_counter()
        for i in range(args.vms):
            vm_uuid = str(uuid.uuid4())
            spec = VmSpec(uuid=vm_uuid, name=f"vm{i:05d}", definition=tiny_vm(f"vm{i:05d}", vm_uuid), node="n1")
            defines.append(ms(functools.partial(state.define_vm, spec)))
            names.append(spec.name)
            uuids.append(spec.uuid)
        total_s = time.perf_counter() - started
        picks = random.Random(1).choices(range(args.vms), k=args.lookups)
        by_name = [ms(functools.partial(state.find_vm, names[i])) for i in picks]
        by_uuid = [ms(functools.partial(state.find_vm, uuids[i])) for i in picks]
        one_read = [ms(functools.partial(client.get, layout.vm(uuids[i]))) for i in picks]
    finally:
        if client is not None:
            client.stop()
            client.close()
        if zk is not None:
            zk.stop()
        shutil.rmtree(work, ignore_errors=True)
    rows = {
        "define: first 100": stats(defines[:100]),
        f"define: last 100 (of {args.vms})": stats(defines[-100:]),
        f"find by name ({args.vms} VMs)": stats(by_name),
        f"find by UUID ({args.vms} VMs)": stats(by_uuid),
        "baseline: one znode read": stats(one_read),
    }
    print(f"{args.vms} VMs defined in {total_s:.1f} s ({args.vms / total_s:.0f}/s); {args.lookups} lookups each")
    print(f"{'operation':34} {'median ms':>10} {'p99 ms':>10}")
    for name, r in rows.items():
        print(f"{name:34} {r['median_ms']:10.2f} {r['p99_ms']:10.2f}")
    read = rows["baseline: one znode read"]["median_ms"]
    name_ok = rows[f"find by name ({args.vms} VMs)"]["median_ms"] <= 3 * read
    flat = rows[f"define: last 100 (of {args.vms})"]["median_ms"] <= 2 * rows["define: first 100"]["median_ms"]
    print(
        f"targets: find by name ≤ 3 reads: {'met' if name_ok else 'MISSED'}; defines flat: {'met' if flat else 'MISSED'}"
    )
    report.write({"vms": args.vms, "define_total_s": total_s, "rows": rows}, args.out)


if __name__ == "__main__":
    main()
