"""Benchmark: start-up time of the `pvc` command line.

Median wall time (of --repeat runs, after one warm-up) of:

1. `pvc --help`                                           target: median ≤ 150 ms
2. `pvc config validate examples/production-3node.toml`   (offline: loads the schema)
3. `pvc vm list` against an API:
   - default: a tiny in-process HTTP server answering `[]`, so the time is the client's own; it also reports
     the client-side time to the first request (process start → request received);
   - `--real-api`: the real API under gunicorn over a real ZooKeeper (as the component tests start them);
   - `--connection NAME`: an existing cluster, from your connection profiles.

Baseline in the same run: `python -c pass` with the same interpreter, because these machines are noisy.
Prints a table and writes bench/results/cli_startup.json. Run from the repository root:

    .venv/bin/python -m bench.cli_startup [--repeat 20] [--real-api | --connection NAME]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from bench import report
from tests.harness.cli import PVC
from tests.harness.examples import example
from tests.harness.procs import end_on_signals

EXAMPLE = example("production-3node")
TARGET_HELP_MS = 150.0


def run_ms(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    res = subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = (time.perf_counter() - start) * 1000
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} exited {res.returncode}: {res.stderr.strip()}")
    return elapsed


def measure(argv: list[str], env: dict[str, str], repeat: int) -> list[float]:
    run_ms(argv, env)  # warm-up: page cache, .pyc files
    return [run_ms(argv, env) for _ in range(repeat)]


class Stub:
    """An API that answers GET /api/v1/vms with [] and notes when each request arrived."""

    def __init__(self) -> None:
        self.arrivals: list[float] = []
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                stub.arrivals.append(time.perf_counter())
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"[]")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    def first_request_ms(self, argv: list[str], env: dict[str, str], repeat: int) -> list[float]:
        out = []
        for _ in range(repeat):
            self.arrivals.clear()
            start = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
            out.append((self.arrivals[0] - start) * 1000)
        return out

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class RealApi:
    """ZooKeeper and the API under gunicorn, with a formed cluster's state (three registered nodes)."""

    def __init__(self, workdir: Path) -> None:
        from pvc.config.secrets import initial_api_key
        from tests.harness.api import ApiServer, seed_formed_cluster
        from tests.harness.cluster import JOIN_KEY, cluster_toml
        from tests.harness.ports import BENCH_PORT
        from tests.harness.zookeeper import ZooKeeper

        self.api: ApiServer | None = None
        self.zk = ZooKeeper(workdir / "zk", "127.0.0.1", BENCH_PORT)
        try:
            self.zk.wait_ready()
            config = workdir / "cluster.toml"
            config.write_text(cluster_toml(["n1", "n2", "n3"]))
            client, _ = seed_formed_cluster(self.zk.hosts, JOIN_KEY, ["n1", "n2", "n3"])
            client.stop()
            client.close()
            self.api = ApiServer(workdir, config, self.zk.hosts, BENCH_PORT + 1)
            self.api.wait_ready()
        except BaseException:
            self.stop()
            raise
        self.url, self.key = self.api.url, initial_api_key(JOIN_KEY)
        self.ca_file = workdir / "cluster-ca.pem"  # the API serves HTTPS with a certificate of the cluster CA
        self.ca_file.write_text(self.api.ca_pem or "")

    def stop(self) -> None:
        if self.api is not None:
            self.api.stop()
        self.zk.stop()


def main() -> None:
    end_on_signals()  # a killed or interrupted run still stops what it started
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=20)
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--real-api", action="store_true", help="start ZooKeeper and the API (gunicorn)")
    where.add_argument("--connection", metavar="NAME", help="an existing cluster from your connection profiles")
    parser.add_argument("--out", default=report.default_out("cli_startup"))
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="pvc-bench-cli-"))
    env = {**os.environ}
    if not args.connection:
        env["PVC_CLIENT_DIR"] = str(workdir / "client")
        env.pop("PVC_CONNECTION", None)
    stub = real = None
    try:
        if args.connection:
            api, vm_list = f"connection '{args.connection}'", [str(PVC), "-c", args.connection, "vm", "list"]
        else:
            if args.real_api:
                real = RealApi(workdir)
                url, key, api = real.url, real.key, "the real API (gunicorn + ZooKeeper) on 127.0.0.1"
            else:
                stub = Stub()
                url, key, api = stub.url, "bench", "a stub HTTP server on 127.0.0.1 (client time only)"
            ca = ["--ca-file", str(real.ca_file)] if real is not None else []
            subprocess.run(
                [str(PVC), "connection", "add", "bench", "--address", url, "--key", key, *ca],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            vm_list = [str(PVC), "vm", "list"]

        results = {
            "baseline: python -c pass": measure([sys.executable, "-c", "pass"], env, args.repeat),
            "pvc --help": measure([str(PVC), "--help"], env, args.repeat),
            "pvc config validate (3 nodes)": measure([str(PVC), "config", "validate", str(EXAMPLE)], env, args.repeat),
            "pvc vm list": measure(vm_list, env, args.repeat),
        }
        if stub is not None:
            results["pvc vm list: start → first request"] = stub.first_request_ms(vm_list, env, args.repeat)
    finally:
        if stub is not None:
            stub.stop()
        if real is not None:
            real.stop()
        shutil.rmtree(workdir, ignore_errors=True)

    print(f"pvc start-up, {args.repeat} runs each (after one warm-up); vm list against {api}")
    rows = [(name, f"{statistics.median(v):.1f}", f"{min(v):.1f}", f"{max(v):.1f}") for name, v in results.items()]
    print(report.table(["what", "median ms", "min ms", "max ms"], rows))
    baseline = statistics.median(results["baseline: python -c pass"])
    help_ms = statistics.median(results["pvc --help"])
    verdict = "meets" if help_ms <= TARGET_HELP_MS else "MISSES"
    print(
        f"target: pvc --help median ≤ {TARGET_HELP_MS:.0f} ms → {verdict} "
        f"({help_ms:.1f} ms; {help_ms - baseline:.1f} ms above the bare interpreter)"
    )
    document = {
        "benchmark": "cli_startup",
        "repeat": args.repeat,
        "vm_list_against": api,
        "median_ms": {k: round(statistics.median(v), 1) for k, v in results.items()},
        "max_ms": {k: round(max(v), 1) for k, v in results.items()},
        "target_help_ms": TARGET_HELP_MS,
        "meets_target": help_ms <= TARGET_HELP_MS,
    }
    report.write(document, args.out)


if __name__ == "__main__":
    main()
