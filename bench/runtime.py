"""Benchmarks of the cluster runtime on three simulated servers (real ZooKeeper, libvirtd, QEMU, IPMI):

1. failover: power loss of a node → all its VMs running on other nodes (median of --repeat runs);
2. primary failover: power loss of the primary → another coordinator is primary and holds the floating IP;
3. live migration of the same domain through pvcd vs plain `virsh migrate --live --p2p`, in the same run;
4. with `--soak SECONDS`: false fences under load — the cluster runs a VM per node while `--burners` processes
   keep every core busy, and every node record, fault and keepalive age is watched: a node marked dead, fenced or
   stalled there is a false alarm (nothing failed). With `--burners`, the failovers above run under that load too.

Settings are cluster.toml's defaults (keepalive 1 s, dead after 4; ZooKeeper session 3 s) unless given.
Prints a table and writes bench/results/runtime.json. Run as root, from the repository root:
`.venv/bin/python -m bench.runtime`; for the soak of issue 12 (both cores saturated, 10 minutes):
`.venv/bin/python -m bench.runtime --soak 600 --burners 2 --only soak,failover`.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import libvirt

from bench import report
from pvc.config.schema import Timers
from pvc.nodeos.state import actions
from pvc.nodeos.state.clock import ZkClock
from pvc.nodeos.state.models import VmSpec
from tests.harness.cluster import CLUSTER, RuntimeCluster, tiny_domain_xml
from tests.harness.ports import BENCH_PORT, NS_PREFIX
from tests.harness.procs import end_on_signals, wait_until

DEFAULT_TIMERS = Timers()
TARGETS = {"failover_s": 20.0, "primary_failover_s": 5.0, "migration_ratio": 1.2}


def cluster(workdir: Path, cache: Path, args: argparse.Namespace) -> RuntimeCluster:
    c = RuntimeCluster(
        Path(tempfile.mkdtemp(prefix="b", dir=workdir)),
        ["n1", "n2", "n3"],
        prefix=f"b{NS_PREFIX}",  # not under NS_PREFIX: the component tests' teardown removes those namespaces
        zk_host_port=BENCH_PORT + 30,
        keepalive=args.keepalive,
        dead_after=args.dead_after,
        session_ms=args.session_ms,
    )
    try:
        c.up(cache)
    except BaseException:
        c.down()
        raise
    return c


def runs_at_home(c: RuntimeCluster, spec: VmSpec) -> bool:
    return c.where(spec.uuid) == [spec.node]


def warm_up(c: RuntimeCluster) -> None:
    """Start and destroy a domain on every node's libvirtd (not a PVC VM: pvcd leaves it alone). On this machine a
    libvirtd's first domain start takes about 4 s longer than the next ones: not part of what is measured."""
    for node in c.nodes:
        conn = libvirt.open(c.libvirt_uri(node))
        try:
            conn.createXML(tiny_domain_xml(f"warm-{node}", c.dir / f"warm-{node}.log"), 0).destroy()
        finally:
            conn.close()


def failover(workdir: Path, cache: Path, args: argparse.Namespace) -> float:
    c = cluster(workdir, cache, args)
    try:
        warm_up(c)
        victim = next(n for n in c.nodes if n != c.state.primary())
        specs = [c.define(f"fo{i}", victim) for i in range(args.vms)]
        for s in specs:
            actions.change_state(c.state, s.name, "start")
        for s in specs:

            def on_victim(uuid: str = s.uuid) -> bool:
                return c.where(uuid) == [victim]

            wait_until(f"{s.name} running", on_victim, 60)
        time.sleep(args.keepalive * 2)  # settle: keepalives report the VMs
        t0 = time.monotonic()
        c.power_loss(victim)
        wait_until(
            "all VMs running elsewhere",
            lambda: all(len(w := c.where(s.uuid)) == 1 and w[0] != victim for s in specs),
            120,
            interval=0.05,
        )
        elapsed = time.monotonic() - t0
        assert not c.checker.violations, c.checker.violations
        return elapsed
    finally:
        c.down()


@contextlib.contextmanager
def burning(count: int) -> Iterator[None]:
    """`count` processes that each keep a core busy, for the block."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
            proc.wait()


FALSE_ALARMS = ("node-dead", "node-stalled", "fence-failed", "fence-quorum", "primary-stalled")


def soak(workdir: Path, cache: Path, args: argparse.Namespace) -> dict:
    """Nothing fails for `args.soak` seconds while every core is busy: count what the cluster says failed."""
    c = cluster(workdir, cache, args)
    try:
        specs = [c.define(f"soak-{n}", n) for n in c.nodes]
        for s in specs:
            actions.change_state(c.state, s.name, "start")
        for s in specs:
            wait_until(f"{s.name} running", functools.partial(runs_at_home, c, s), 60)
        clock = ZkClock(c.client)
        clock.start()
        clock.wait_known(30)
        marked: set[str] = set()
        alarms: set[str] = set()
        oldest = 0
        with burning(args.burners):
            end = time.monotonic() + args.soak
            while time.monotonic() < end:
                for r in c.state.nodes():
                    if r.daemon_state in ("dead", "fenced") or r.fence is not None:
                        marked.add(f"{r.name}: {r.daemon_state} {r.fence.state if r.fence else ''}".strip())
                alarms.update(f"{f.id}: {f.message}" for f in c.state.faults() if f.kind in FALSE_ALARMS)
                now = clock.now_ms() or 0
                for n in c.nodes:
                    ka = c.state.keepalive(n)
                    if ka is not None:
                        oldest = max(oldest, now - ka[1])
                time.sleep(0.5)
        moved = [s.name for s in specs if c.where(s.uuid) != [s.node]]
        return {
            "seconds": args.soak,
            "burners": args.burners,
            "nodes_marked": sorted(marked),
            "false_fences": sum(1 for m in marked if "fenced" in m or " off" in m),
            "alarms": sorted(alarms),
            "vms_moved": moved,
            "double_runs": list(c.checker.violations) if c.checker else [],
            "oldest_keepalive_s": round(oldest / 1000, 2),
            "dead_after_s": args.keepalive * args.dead_after,
        }
    finally:
        c.down()


def primary_failover(workdir: Path, cache: Path, args: argparse.Namespace) -> float:
    c = cluster(workdir, cache, args)
    try:
        old = c.state.primary()
        assert old is not None, "the cluster formed with a primary"
        time.sleep(1)
        t0 = time.monotonic()
        c.power_loss(old)

        def taken_over() -> bool:
            new = c.state.primary()
            return new not in (None, old) and f"{CLUSTER.prefix}.250" in c.lab.addresses(new, CLUSTER.device)

        wait_until("a new primary with the floating IP", taken_over, 60, interval=0.05)
        return time.monotonic() - t0
    finally:
        c.down()


def migrations(workdir: Path, cache: Path, args: argparse.Namespace) -> tuple[list[float], list[float]]:
    c = cluster(workdir, cache, args)
    try:
        spec = c.define("mig", "n1", memory_mib=args.memory)
        actions.change_state(c.state, "mig", "start")
        wait_until("mig running", lambda: c.where(spec.uuid) == ["n1"], 60)
        # the same domain, started by hand: not a PVC VM, so pvcd leaves it alone
        raw_xml = tiny_domain_xml("raw", c.dir / "raw-console.log", "c0ffee00-0000-4000-8000-00000000ba5e", args.memory)
        subprocess.run(
            ["virsh", "-c", c.libvirt_uri("n1"), "create", "/dev/stdin"],
            input=raw_xml,
            text=True,
            check=True,
            capture_output=True,
        )
        pvc_times, raw_times = [], []
        here, there = "n1", "n2"
        for _ in range(args.repeat):
            t0 = time.monotonic()
            actions.move_vm(c.state, "mig", "move", target=there)

            def arrived(target: str = there) -> bool:
                return c.state.vm(spec.uuid).state == "start" and c.where(spec.uuid) == [target]

            wait_until("pvcd migration", arrived, 60, interval=0.02)
            pvc_times.append(time.monotonic() - t0)
            t0 = time.monotonic()
            subprocess.run(
                [
                    "virsh",
                    "-c",
                    c.libvirt_uri(here),
                    "migrate",
                    "--live",
                    "--p2p",
                    "--tls",
                    "raw",
                    f"qemu+tls://{CLUSTER.prefix}.{c.host_id(there)}/system",
                ],
                check=True,
                capture_output=True,
            )
            raw_times.append(time.monotonic() - t0)
            here, there = there, here
        return pvc_times, raw_times
    finally:
        c.down()


def main() -> None:
    end_on_signals()  # a killed or interrupted run still powers its simulated servers off
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--vms", type=int, default=2, help="VMs on the node that loses power")
    parser.add_argument("--memory", type=int, default=64, help="MiB of the migrated domain")
    parser.add_argument("--keepalive", type=int, default=DEFAULT_TIMERS.keepalive_interval)
    parser.add_argument("--dead-after", type=int, default=DEFAULT_TIMERS.dead_after)
    parser.add_argument("--session-ms", type=int, default=3000)
    parser.add_argument("--soak", type=int, default=0, help="seconds of the false-fence soak (0: none)")
    parser.add_argument("--burners", type=int, default=0, help="processes keeping a core busy (soak and failovers)")
    parser.add_argument("--only", default="failover,primary,migration,soak", help="which parts to run")
    parser.add_argument("--out", default=report.default_out("runtime"))
    args = parser.parse_args()
    parts = set(args.only.split(","))
    workdir = Path(tempfile.mkdtemp(prefix="pvc-bench-"))
    cache = workdir / "cache"
    cache.mkdir()
    result: dict = {
        "settings": {
            "keepalive_interval_s": args.keepalive,
            "dead_after": args.dead_after,
            "zookeeper_session_ms": args.session_ms,
            "vms": args.vms,
            "domain_mib": args.memory,
            "burners": args.burners,
            "cpus": os.cpu_count(),
        },
        "targets": TARGETS,
    }
    rows: list[tuple[str, float, str, float | None]] = []
    try:
        if "soak" in parts and args.soak:
            result["soak"] = soaked = soak(workdir, cache, args)
            rows += [
                (
                    f"soak {args.soak}s, {args.burners} burners: nodes marked dead/fenced",
                    len(soaked["nodes_marked"]),
                    "",
                    0,
                ),
                ("soak: false alarms (dead, stalled, fence faults)", len(soaked["alarms"]), "", 0),
                ("soak: oldest keepalive seen", soaked["oldest_keepalive_s"], "s", soaked["dead_after_s"]),
            ]
        with burning(args.burners):
            if "failover" in parts:
                fo = [failover(workdir, cache, args) for _ in range(args.repeat)]
                result.update(failover_s=fo, failover_median_s=statistics.median(fo))
                rows.append(
                    ("node power loss → its VMs running elsewhere", statistics.median(fo), "s", TARGETS["failover_s"])
                )
            if "primary" in parts:
                pf = [primary_failover(workdir, cache, args) for _ in range(args.repeat)]
                result.update(primary_failover_s=pf, primary_failover_median_s=statistics.median(pf))
                rows.append(
                    (
                        "primary power loss → new primary + floating IP",
                        statistics.median(pf),
                        "s",
                        TARGETS["primary_failover_s"],
                    )
                )
            if "migration" in parts:
                pvc_mig, raw_mig = migrations(workdir, cache, args)
                ratio = statistics.median(pvc_mig) / statistics.median(raw_mig)
                result.update(migration_pvc_s=pvc_mig, migration_virsh_s=raw_mig, migration_ratio=ratio)
                rows += [
                    ("live migration via pvcd (median)", statistics.median(pvc_mig), "s", None),
                    ("live migration via virsh (baseline, median)", statistics.median(raw_mig), "s", None),
                    ("pvcd / virsh", ratio, "×", TARGETS["migration_ratio"]),
                ]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"settings: {result['settings']}; {args.repeat} runs each")
    table = [
        (
            name,
            f"{value:.2f}{unit}",
            "" if target is None else f"≤{target:g}{unit}",
            "" if target is None else ("ok" if value <= target else "MISSED"),
        )
        for name, value, unit, target in rows
    ]
    print(report.table(["measure", "value", "target", ""], table))
    report.write(result, args.out)


if __name__ == "__main__":
    main()
