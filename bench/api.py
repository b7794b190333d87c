"""Benchmark: GET /api/v1/vms with 1 000 VMs in ZooKeeper, 2 gunicorn workers, wrk as the load generator on
loopback. Baseline in the same run: GET /api/v1/docs (a static page through the same gunicorn and Falcon stack).

Prints a table and writes bench/results/api.json. Targets: p50 ≤ 10 ms, ≥ 1 000 requests/s.
Ports from PVC_TEST_PORT_BASE (tests/harness/ports.py). Run from the repository root:
    .venv/bin/python -m bench.api [--vms 1000] [--seconds 10] [--connections 8]
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

from bench import report
from pvc.config.schema import API_PREFIX
from pvc.config.secrets import initial_api_key
from pvc.nodeos.state.models import VmSpec
from tests.harness.api import ApiServer, seed_formed_cluster
from tests.harness.cluster import JOIN_KEY, cluster_toml, tiny_vm
from tests.harness.ports import BENCH_PORT
from tests.harness.procs import end_on_signals
from tests.harness.zookeeper import ZooKeeper

TARGETS = {"p50_ms": 10.0, "requests_per_s": 1000.0}
UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, key: str, seconds: int, connections: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--latency", "-H", f"X-Api-Key: {key}", url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lat = {
        p: float(v) * UNITS[u] for p, v, u in re.findall(r"^\s+(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
    }
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    return {
        "p50_ms": lat["50"],
        "p99_ms": lat["99"],
        "requests_per_s": rps,
        "non_2xx": int(errors.group(1)) if errors else 0,
    }


def fill(zk_hosts: str, nodes: list[str], vms: int) -> None:
    """A formed cluster's state with `vms` defined VMs spread over the nodes."""
    client, state = seed_formed_cluster(zk_hosts, JOIN_KEY, nodes, mem_total=65536, mem_free=[60000] * len(nodes))
    try:
        for i in range(vms):
            vm_uuid = str(uuid.uuid4())
            state.define_vm(
                VmSpec(
                    uuid=vm_uuid,
                    name=f"vm{i:04d}",
                    definition=tiny_vm(f"vm{i:04d}", vm_uuid, tags=["bench"]),
                    node=nodes[i % len(nodes)],
                    state="start",
                )
            )
    finally:
        client.stop()
        client.close()


def main() -> None:
    end_on_signals()  # a killed or interrupted run still stops its ZooKeeper and gunicorn
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--port", type=int, default=BENCH_PORT + 10, help="the API's; ZooKeeper's is the next one")
    parser.add_argument("--out", default=report.default_out("api"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pvc-bench-api-"))
    zk = None
    try:
        zk = ZooKeeper(work / "zk", "127.0.0.1", args.port + 1)
        zk.wait_ready()
        nodes = ["n1", "n2", "n3"]
        fill(zk.hosts, nodes, args.vms)
        config = work / "cluster.toml"
        config.write_text(cluster_toml(nodes))
        key = initial_api_key(JOIN_KEY)
        with ApiServer.running(work, config, zk.hosts, args.port, workers=2) as api:
            status, listed = api.call("GET", f"{API_PREFIX}/vms", key=key)
            assert status == 200 and len(listed) == args.vms, (status, len(listed))
            base = wrk(f"{api.url}{API_PREFIX}/docs", key, args.seconds, args.connections)
            vms = wrk(f"{api.url}{API_PREFIX}/vms", key, args.seconds, args.connections)
            size = len(json.dumps(listed))
    finally:
        if zk is not None:
            zk.stop()
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "vms": args.vms,
        "response_bytes": size,
        "workers": 2,
        "connections": args.connections,
        "seconds": args.seconds,
        "list": vms,
        "baseline_docs": base,
        "targets": TARGETS,
    }
    print(f"{args.vms} VMs ({size} bytes per list), 2 gunicorn workers, wrk -c{args.connections} for {args.seconds}s")
    rows = [
        (name, f"{r['p50_ms']:.2f}", f"{r['p99_ms']:.2f}", f"{r['requests_per_s']:.0f}", r["non_2xx"])
        for name, r in ((f"GET {API_PREFIX}/vms", vms), (f"baseline: GET {API_PREFIX}/docs", base))
    ]
    print(report.table(["request", "p50 ms", "p99 ms", "req/s", "non-2xx"], rows))
    ok = vms["p50_ms"] <= TARGETS["p50_ms"] and vms["requests_per_s"] >= TARGETS["requests_per_s"]
    print(f"targets p50 ≤ {TARGETS['p50_ms']:g} ms, ≥ {TARGETS['requests_per_s']:g} req/s: {'met' if ok else 'MISSED'}")
    report.write(result, args.out)


if __name__ == "__main__":
    main()
