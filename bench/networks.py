"""Benchmarks of client networks on three simulated nodes (namespaces with real pvcd, FRR/EVPN, dnsmasq, nftables and
VXLAN, as tests/component/test_networks.py runs them), one managed network with NAT:

1. throughput: guest to guest TCP (stand-in guests: namespaces on two nodes' vmbr100) across nodes over the VXLAN,
   against the same two namespaces over a plain bridge on the host, in the same run (ratio);
2. DHCP: a new guest's lease from the primary's dnsmasq, from the client's start (a Python process) to its address
   (median of --repeat);
3. gateway move: `request_primary` to another coordinator → a guest reaches the upstream again, masqueraded by the
   new primary (median of --repeat moves).

Prints a table and writes bench/results/networks.json. Run as root, from the repository root:
`.venv/bin/python -m bench.networks [--repeat 3] [--seconds 3]`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from tests.component.test_networks import CONNECT, NETWORK, SERVE, guest
from tests.harness.cluster import UPSTREAM, RuntimeCluster
from tests.harness.netlab import kill_all_in
from tests.harness.ports import BENCH_PORT, NS_PREFIX
from tests.harness.procs import Proc, end_on_signals, wait_until

PREFIX = f"b{NS_PREFIX}"  # not under NS_PREFIX: the component tests' teardown removes those namespaces
PORT = 7300

SINK = """
import socket, sys
s = socket.create_server(("0.0.0.0", int(sys.argv[1])), reuse_port=True)
print("listening", flush=True)
while True:
    c, _ = s.accept()
    n = 0
    while data := c.recv(1 << 20):
        n += len(data)
    c.sendall(str(n).encode()); c.close()
"""

SOURCE = """
import socket, sys, time
c = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=10)
chunk, n, t0 = b"x" * (1 << 18), 0, time.monotonic()
while time.monotonic() - t0 < float(sys.argv[3]):
    c.sendall(chunk); n += len(chunk)
c.shutdown(socket.SHUT_WR)
got = int(c.recv(100) or b"0")
print(got * 8 / (time.monotonic() - t0) / 1e6)
"""


def ns_run(ns: str, *argv: str, timeout: float = 120) -> str:
    done = subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise SystemExit(f"{argv} in {ns}: {done.stdout}{done.stderr}")
    return done.stdout


def ip(*argv: str) -> None:
    subprocess.run(["ip", *argv], check=True, capture_output=True, timeout=30)


def lease(ns: str, hostname: str) -> tuple[dict, float]:
    t0 = time.monotonic()
    got = json.loads(ns_run(ns, sys.executable, "-m", "tests.harness.dhcp", "eth0", hostname, timeout=90))
    return got, time.monotonic() - t0


def throughput(src: str, dst: str, address: str, seconds: float, log: Path) -> float:
    """Mbit/s of one TCP stream from `src` to a sink in `dst` at `address`."""
    sink = Proc(f"sink-{dst}", ["ip", "netns", "exec", dst, sys.executable, "-c", SINK, str(PORT)], log)
    try:
        wait_until("the sink", lambda: "listening" in log.read_text(), 10)
        return float(ns_run(src, sys.executable, "-c", SOURCE, address, str(PORT), str(seconds)).strip())
    finally:
        sink.stop()


def plain_bridge(g1: str, g2: str) -> tuple[str, str]:
    """The same two namespaces on a plain bridge on the host (a namespace of its own holds it): eth1 each, with
    the managed network's MTU so only the path differs."""
    host = f"{PREFIX}hb"
    subprocess.run(["ip", "netns", "del", host], capture_output=True)
    ip("netns", "add", host)
    ip("-n", host, "link", "add", "br0", "type", "bridge")
    ip("-n", host, "link", "set", "br0", "up")
    for i, ns in enumerate((g1, g2), start=1):
        ip("link", "add", "eth1", "netns", ns, "type", "veth", "peer", "name", f"p{i}", "netns", host)
        ip("-n", host, "link", "set", f"p{i}", "master", "br0", "up")
        ip("-n", ns, "addr", "add", f"10.254.0.{i}/24", "dev", "eth1")
        ip("-n", ns, "link", "set", "eth1", "mtu", "1450", "up")
    return host, "10.254.0.2"


def connect(ns: str, host: str, port: int, timeout: float = 1) -> str:
    return ns_run(ns, sys.executable, "-c", CONNECT, host, str(port), str(timeout)).strip()


def main() -> None:
    end_on_signals()  # a killed or interrupted run still ends its simulated nodes
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each throughput run")
    parser.add_argument("--out", default=report.default_out("networks"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pvc-bench-"))
    cache = workdir / "cache"
    cache.mkdir()
    made: list[str] = []
    c = RuntimeCluster(
        Path(tempfile.mkdtemp(prefix="n", dir=workdir)),
        ["n1", "n2", "n3"],
        prefix=PREFIX,
        zk_host_port=BENCH_PORT + 40,
        frr=True,
        fencing=False,
        extra=NETWORK,
    )
    try:
        c.up(cache)
        state = c.state
        wait_until("the config's network", lambda: state.networks(), 30)
        primary = state.primary()
        others = [n for n in c.nodes if n != primary]
        g1 = guest(c, made, others[0], "g1", "52:54:00:00:02:01", PREFIX)
        g2 = guest(c, made, others[1], "g2", "52:54:00:00:02:02", PREFIX)
        dhcp_s = []
        for i in range(args.repeat):  # each a new client (a new MAC): dnsmasq offers, the client requests
            d = guest(c, made, others[0], f"d{i}", f"52:54:00:00:03:{i:02x}", PREFIX)
            dhcp_s.append(lease(d, f"dhcp{i}")[1])
        lease(g1, "bench1")
        lease2, _ = lease(g2, "bench2")
        host, g2_plain = plain_bridge(g1, g2)
        made.append(host)
        vxlan = [throughput(g1, g2, lease2["ip"], args.seconds, workdir / f"vx{i}.log") for i in range(args.repeat)]
        plain = [throughput(g1, g2, g2_plain, args.seconds, workdir / f"br{i}.log") for i in range(args.repeat)]

        upstream = Proc(
            "upstream", ["ip", "netns", "exec", c.lab.switch, sys.executable, "-c", SERVE, "7100"], workdir / "up.log"
        )
        moves = []
        try:
            wait_until("the upstream listener", lambda: "listening" in (workdir / "up.log").read_text(), 10)
            world = f"{UPSTREAM.prefix}.254"
            for _ in range(args.repeat):
                old = state.primary()
                new = next(n for n in c.nodes if n != old)
                new_ip = f"{UPSTREAM.prefix}.{c.host_id(new)}"
                wait_until("NAT before the move", lambda: connect(g1, world, 7100).startswith(UPSTREAM.prefix), 30)
                t0 = time.monotonic()
                state.request_primary(new)

                def from_new(address: str = new_ip) -> bool:
                    return connect(g1, world, 7100) == address

                wait_until("NAT from the new primary", from_new, 60, interval=0.05)
                moves.append(time.monotonic() - t0)
        finally:
            upstream.stop()
    finally:
        for ns in made:
            kill_all_in(ns)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        c.down()
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "settings": {"repeat": args.repeat, "seconds": args.seconds, "mtu": 1450},
        "vxlan_mbit_s": vxlan,
        "plain_bridge_mbit_s": plain,
        "throughput_ratio": statistics.median(vxlan) / statistics.median(plain),
        "dhcp_lease_s": dhcp_s,
        "dhcp_lease_median_s": statistics.median(dhcp_s),
        "gateway_move_s": moves,
        "gateway_move_median_s": statistics.median(moves),
    }
    rows = [
        ("guest → guest across nodes over VXLAN (median)", f"{statistics.median(vxlan):.0f}", "Mbit/s"),
        ("same namespaces over a plain bridge (median)", f"{statistics.median(plain):.0f}", "Mbit/s"),
        ("VXLAN / plain bridge", f"{result['throughput_ratio']:.2f}", ""),
        ("DHCP lease from the primary's dnsmasq (median)", f"{result['dhcp_lease_median_s']:.2f}", "s"),
        ("primary move → NAT from the new primary (median)", f"{result['gateway_move_median_s']:.2f}", "s"),
    ]
    print(report.table(("measure", "value", "unit"), rows))
    report.write(result, args.out)


if __name__ == "__main__":
    main()
