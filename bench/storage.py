"""Storage benchmarks on a real Ceph (one mon, one mgr, three bluestore OSDs on sparse files, as the component
tests start it; or an existing cluster with --conf):

1. latency of volume create, clone (from a protected snapshot) and snapshot create: median of --repeat;
2. write throughput through librbd (the python rbd binding PVC uses): sequential 4 MiB writes and 4 KiB random
   writes, --queue-depth writes in flight (aio_write), against `rbd bench --io-type write` with the same sizes,
   pattern and threads, on the same pool in the same run.

Prints a table and writes bench/results/storage.json. Run as root, from the repository root:
`.venv/bin/python -m bench.storage`.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import statistics
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import rados
import rbd

from bench import report
from pvc.nodeos.storage import pools, volumes
from pvc.nodeos.storage.ceph import connect
from tests.harness.procs import end_on_signals

MiB = 1024**2
POOL = "bench"


def median_ms(fn: Callable[[int], object], repeat: int) -> tuple[float, list[float]]:
    samples = []
    for i in range(repeat):
        started = time.perf_counter()
        fn(i)
        samples.append((time.perf_counter() - started) * 1000)
    return statistics.median(samples), samples


def librbd_write(cluster: rados.Rados, name: str, io_size: int, total: int, pattern: str, depth: int) -> float:
    """MiB/s writing `total` bytes in `io_size` pieces, `depth` in flight."""
    data = os.urandom(io_size)
    count = total // io_size
    with volumes.image(cluster, POOL, name) as img:
        size = img.size()
        slots = size // io_size
        offsets = (
            [i * io_size for i in range(count)]
            if pattern == "seq"
            else [random.randrange(slots) * io_size for _ in range(count)]
        )
        gate = threading.Semaphore(depth)
        errors: list[int] = []

        def done(completion: rbd.Completion) -> None:
            if completion.get_return_value() < 0:
                errors.append(completion.get_return_value())
            gate.release()

        started = time.perf_counter()
        for offset in offsets:
            gate.acquire()
            img.aio_write(data, offset, done)
        for _ in range(depth):
            gate.acquire()
        elapsed = time.perf_counter() - started
        img.flush()
    if errors:
        raise RuntimeError(f"{len(errors)} writes failed")
    return total / MiB / elapsed


def rbd_bench(conf: str, name: str, io_size: int, total: int, pattern: str, depth: int) -> float:
    out = subprocess.run(
        [
            "rbd", "-c", conf, "bench", f"{POOL}/{name}", "--io-type", "write", "--io-size", str(io_size),
            "--io-total", str(total), "--io-pattern", pattern, "--io-threads", str(depth),
        ],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    m = re.search(r"elapsed:\s*([\d.]+)\s+ops:\s*(\d+)\s+ops/sec:\s*([\d.]+)\s+bytes/sec:\s*([\d.]+)\s*(\w+)/s", out)
    if not m:
        raise RuntimeError(f"cannot read rbd bench's summary:\n{out}")
    value, unit = float(m.group(4)), m.group(5)
    scale = {"B": 1 / MiB, "KiB": 1 / 1024, "MiB": 1.0, "GiB": 1024.0}.get(unit, 1.0)
    return value * scale


def run(conf: str, args: argparse.Namespace) -> dict:
    with connect(conf) as cluster:
        if cluster.pool_exists(POOL):
            pools.remove_pool(cluster, POOL, POOL)
        pools.create_pool(cluster, POOL, pgs=32, size=args.size, min_size=max(1, args.size - 1))
        create_ms, create_all = median_ms(
            lambda i: volumes.create_volume(cluster, POOL, f"c{i}", 64 * MiB), args.repeat
        )
        with volumes.image(cluster, POOL, "c0") as img:
            img.write(os.urandom(4 * MiB), 0)
        snap_ms, snap_all = median_ms(lambda i: volumes.create_snapshot(cluster, POOL, "c1", f"s{i}"), args.repeat)
        volumes.create_snapshot(cluster, POOL, "c0", "base")
        clone_ms, clone_all = median_ms(
            lambda i: volumes.clone_volume(cluster, POOL, "c0", "base", f"k{i}"), args.repeat
        )
        volume_size = max(args.seq_total, 256 * MiB)
        volumes.create_volume(cluster, POOL, "w1", volume_size)
        volumes.create_volume(cluster, POOL, "w2", volume_size)
        rand_total = args.rand_ops * 4096
        results: dict[str, dict[str, Any]] = {
            "seq_4m": {
                "librbd_mib_s": librbd_write(cluster, "w1", 4 * MiB, args.seq_total, "seq", args.queue_depth),
                "rbd_bench_mib_s": rbd_bench(conf, "w2", 4 * MiB, args.seq_total, "seq", args.queue_depth),
            },
            "rand_4k": {
                "librbd_mib_s": librbd_write(cluster, "w1", 4096, rand_total, "rand", args.queue_depth),
                "rbd_bench_mib_s": rbd_bench(conf, "w2", 4096, rand_total, "rand", args.queue_depth),
            },
        }
        pools.remove_pool(cluster, POOL, POOL)
    for r in results.values():
        r["ratio"] = r["librbd_mib_s"] / r["rbd_bench_mib_s"]
        r["librbd_iops"] = None
    results["rand_4k"]["librbd_iops"] = results["rand_4k"]["librbd_mib_s"] * MiB / 4096
    results["rand_4k"]["rbd_bench_iops"] = results["rand_4k"]["rbd_bench_mib_s"] * MiB / 4096
    return {
        "settings": {
            "repeat": args.repeat,
            "pool_size": args.size,
            "queue_depth": args.queue_depth,
            "seq_total_mib": args.seq_total // MiB,
            "rand_ops": args.rand_ops,
            "osds": "3 bluestore on sparse files, one host" if not args.conf else "existing cluster",
        },
        "volume_create_ms": create_ms,
        "volume_create_samples_ms": create_all,
        "snapshot_create_ms": snap_ms,
        "snapshot_create_samples_ms": snap_all,
        "clone_ms": clone_ms,
        "clone_samples_ms": clone_all,
        "write": results,
    }


def main() -> None:
    end_on_signals()  # a killed or interrupted run still stops the Ceph it started
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--conf", help="ceph.conf of an existing cluster (client.admin); default: start one")
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--size", type=int, default=3, help="pool size (copies)")
    parser.add_argument("--queue-depth", type=int, default=16)
    parser.add_argument("--seq-total", type=int, default=256 * MiB)
    parser.add_argument("--rand-ops", type=int, default=4096)
    parser.add_argument("--out", default=report.default_out("storage"))
    args = parser.parse_args()
    if args.conf:
        result = run(args.conf, args)
    else:
        from tests.harness.ceph import Ceph, CephNet
        from tests.harness.cluster import JOIN_KEY
        from tests.harness.ports import BENCH_CEPH_PORT, NS_PREFIX, PORT_BASE

        ceph = Ceph(
            Path(tempfile.mkdtemp(prefix="pvc-bench-ceph-")),
            JOIN_KEY,
            port=BENCH_CEPH_PORT,
            net=CephNet(f"cephb-{NS_PREFIX}", PORT_BASE // 10 + 1),
        )
        try:
            ceph.up()
            result = run(str(ceph.conf), args)
        finally:
            ceph.down()
    w = result["write"]
    rows = [
        ("volume create (median)", f"{result['volume_create_ms']:.1f} ms", ""),
        ("snapshot create (median)", f"{result['snapshot_create_ms']:.1f} ms", ""),
        ("clone (median)", f"{result['clone_ms']:.1f} ms", ""),
        (
            "seq write 4 MiB, librbd",
            f"{w['seq_4m']['librbd_mib_s']:.1f} MiB/s",
            f"rbd bench {w['seq_4m']['rbd_bench_mib_s']:.1f} MiB/s (x{w['seq_4m']['ratio']:.2f})",
        ),
        (
            "rand write 4 KiB, librbd",
            f"{w['rand_4k']['librbd_iops']:.0f} IOPS",
            f"rbd bench {w['rand_4k']['rbd_bench_iops']:.0f} IOPS (x{w['rand_4k']['ratio']:.2f})",
        ),
    ]
    print(report.table(["measure", "value", "comparison"], rows))
    s = result["settings"]
    print(f"(pool size {s['pool_size']}, queue depth {s['queue_depth']}, {s['repeat']} repeats, {s['osds']})")
    report.write(result, args.out)


if __name__ == "__main__":
    main()
