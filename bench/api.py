"""Benchmark: GET /api/v1/vms with 1 000 VMs in ZooKeeper, 2 gunicorn workers, wrk as the load generator on
loopback. Baseline in the same run: GET /api/v1/docs (a static page through the same gunicorn and Falcon stack).

Prints a table and writes bench/results/api.json. Targets: p50 ≤ 10 ms, ≥ 1 000 requests/s.
    .venv/bin/python bench/api.py [--vms 1000] [--seconds 10] [--connections 8]
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pvc.config.secrets import ZK_USER, initial_api_key, zookeeper_password  # noqa: E402
from pvc.nodeos.state import layout  # noqa: E402
from pvc.nodeos.state.migrations import ensure_schema  # noqa: E402
from pvc.nodeos.state.models import Keepalive, NodeRecord, VmMeta, VmSpec  # noqa: E402
from pvc.nodeos.state.store import ClusterState, make_client  # noqa: E402
from tests.component.api import ApiServer  # noqa: E402
from tests.component.cluster import JOIN_KEY, cluster_toml, tiny_domain_xml  # noqa: E402
from tests.component.zookeeper import ZooKeeper  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vms", type=int, default=1000)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--port", type=int, default=21990)
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "api.json"))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="pvc-bench-api-"))
    zk = ZooKeeper(work / "zk", "127.0.0.1", args.port + 1)
    api = None
    try:
        zk.wait_ready()
        client = make_client(zk.hosts, user=ZK_USER, password=zookeeper_password(JOIN_KEY), timeout=10)
        client.start(timeout=10)
        state = ClusterState(client)
        ensure_schema(state)
        nodes = ["n1", "n2", "n3"]
        for name in nodes:
            state.put(layout.node(name), NodeRecord(name=name, daemon_state="run"))
            state.write_keepalive(name, Keepalive(mem_total=65536, mem_free=60000))
        for i in range(args.vms):
            vm_uuid = str(uuid.uuid4())
            state.define_vm(
                VmSpec(
                    uuid=vm_uuid,
                    name=f"vm{i:04d}",
                    xml=tiny_domain_xml(f"vm{i:04d}", vm_uuid),
                    node=nodes[i % 3],
                    memory_mib=64,
                    vcpus=1,
                    state="start",
                    meta=VmMeta(tags=["bench"]),
                )
            )
        config = work / "cluster.toml"
        config.write_text(cluster_toml(nodes))
        api = ApiServer(work, config, zk.hosts, args.port, workers=2)
        api.wait_ready()
        key = initial_api_key(JOIN_KEY)
        status, listed = api.call("GET", "/api/v1/vms", key=key)
        assert status == 200 and len(listed) == args.vms, (status, len(listed))
        base = wrk(f"{api.url}/api/v1/docs", key, args.seconds, args.connections)
        vms = wrk(f"{api.url}/api/v1/vms", key, args.seconds, args.connections)
        size = len(json.dumps(listed))
    finally:
        if api:
            api.stop()
        zk.stop()
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
    print(f"{'request':34} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>9} {'non-2xx':>8}")
    for name, r in (("GET /api/v1/vms", vms), ("baseline: GET /api/v1/docs", base)):
        print(f"{name:34} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['requests_per_s']:9.0f} {r['non_2xx']:8d}")
    ok = vms["p50_ms"] <= TARGETS["p50_ms"] and vms["requests_per_s"] >= TARGETS["requests_per_s"]
    print(f"targets p50 ≤ {TARGETS['p50_ms']:g} ms, ≥ {TARGETS['requests_per_s']:g} req/s: {'met' if ok else 'MISSED'}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
