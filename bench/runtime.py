"""Benchmarks of the cluster runtime on three simulated servers (real ZooKeeper, libvirtd, QEMU, IPMI):

1. failover: power loss of a node → all its VMs running on other nodes (median of --repeat runs);
2. primary failover: power loss of the primary → another coordinator is primary and holds the floating IP;
3. live migration of the same domain through pvcd vs plain `virsh migrate --live --p2p`, in the same run.

Settings are cluster.toml's defaults (keepalive 2 s, dead after 5, ZooKeeper session 3 s) unless given.
Prints a table and writes bench/results/runtime.json. Run as root, from the repository root:
`.venv/bin/python -m bench.runtime`.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import report
from pvc.config.secrets import vm_mac_prefix
from pvc.nodeos.state import actions
from pvc.nodeos.state.models import VmSpec
from pvc.nodeos.state.vmdef import VmDefinition
from tests.harness.cluster import CLUSTER, JOIN_KEY, RuntimeCluster, tiny_domain_xml, tiny_vm
from tests.harness.ports import BENCH_PORT, NS_PREFIX
from tests.harness.procs import end_on_signals, wait_until

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


def define(c: RuntimeCluster, vm: VmDefinition, node: str) -> VmSpec:
    return actions.define_vm(c.state, vm, node=node, mac_prefix=vm_mac_prefix(JOIN_KEY))


def failover(workdir: Path, cache: Path, args: argparse.Namespace) -> float:
    c = cluster(workdir, cache, args)
    try:
        victim = next(n for n in c.nodes if n != c.state.primary())
        specs = [define(c, tiny_vm(f"fo{i}"), victim) for i in range(args.vms)]
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
        spec = define(c, tiny_vm("mig", memory_mib=args.memory), "n1")
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
    parser.add_argument("--keepalive", type=int, default=2)
    parser.add_argument("--dead-after", type=int, default=5)
    parser.add_argument("--session-ms", type=int, default=3000)
    parser.add_argument("--out", default=report.default_out("runtime"))
    args = parser.parse_args()
    workdir = Path(tempfile.mkdtemp(prefix="pvc-bench-"))
    cache = workdir / "cache"
    cache.mkdir()
    try:
        fo = [failover(workdir, cache, args) for _ in range(args.repeat)]
        pf = [primary_failover(workdir, cache, args) for _ in range(args.repeat)]
        pvc_mig, raw_mig = migrations(workdir, cache, args)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    result: dict[str, Any] = {
        "settings": {
            "keepalive_interval_s": args.keepalive,
            "dead_after": args.dead_after,
            "zookeeper_session_ms": args.session_ms,
            "vms": args.vms,
            "domain_mib": args.memory,
        },
        "failover_s": fo,
        "failover_median_s": statistics.median(fo),
        "primary_failover_s": pf,
        "primary_failover_median_s": statistics.median(pf),
        "migration_pvc_s": pvc_mig,
        "migration_virsh_s": raw_mig,
        "migration_ratio": statistics.median(pvc_mig) / statistics.median(raw_mig),
        "targets": TARGETS,
    }
    rows: list[tuple[str, float, str, float | None]] = [
        ("node power loss → its VMs running elsewhere", result["failover_median_s"], "s", TARGETS["failover_s"]),
        (
            "primary power loss → new primary + floating IP",
            result["primary_failover_median_s"],
            "s",
            TARGETS["primary_failover_s"],
        ),
        ("live migration via pvcd (median)", statistics.median(pvc_mig), "s", None),
        ("live migration via virsh (baseline, median)", statistics.median(raw_mig), "s", None),
        ("pvcd / virsh", result["migration_ratio"], "×", TARGETS["migration_ratio"]),
    ]
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
