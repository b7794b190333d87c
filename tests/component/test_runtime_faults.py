"""pvcd under faults, on three simulated servers (real ZooKeeper, libvirtd, QEMU, IPMI): a ZooKeeper outage fences
no one, a failed fence is retried and a fence in flight survives a primary change, a stalled primary is replaced,
migrations have deadlines, a hung libvirtd freezes nothing, consoles are bounded. Every test ends with the
double-run checker's verdict (conftest.runtime)."""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import time
import uuid

import libvirt
import pytest

from pvc.nodeos.daemon.console import MAX_FILE_BYTES
from pvc.nodeos.state import actions, layout
from pvc.nodeos.state.store import CONSOLE_BYTES
from tests.harness.cluster import console_flood_kernel, flood_domain_xml
from tests.harness.procs import frozen_thread, thread_names, wait_until

FLOATING = "192.0.2.250"


def watch_nodes(cluster, seconds: float) -> list[str]:
    """Poll every node record for `seconds`; return what was ever seen dead, fenced or with a fence."""
    seen: list[str] = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for record in cluster.state.nodes():
            if record.daemon_state in ("dead", "fenced") or record.fence is not None:
                seen.append(f"{record.name}: {record.daemon_state} {record.fence}")
        time.sleep(0.2)
    return seen


def moved_off(cluster, spec, node: str) -> bool:
    """Whether the VM runs, and not on `node`."""
    return cluster.where(spec.uuid) not in ([], [node])


def start_on(cluster, node: str, *names: str, **fields):
    specs = [cluster.define(name, node=node, **fields) for name in names]
    for spec in specs:
        actions.change_state(cluster.state, spec.name, "start")
    for spec in specs:
        cluster.wait_running(spec, node)
    return specs


def holders_of_floating_ip(cluster) -> list[str]:
    return [n for n in cluster.nodes if FLOATING in cluster.lab.addresses(n, "eth1")]


@contextlib.contextmanager
def stopped(pid: int):
    """SIGSTOP a process for the block (SIGCONT after, whatever happens)."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


# -- fencing ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("outage", ["freeze", "restart"])
def test_zookeeper_outage_fences_no_node(runtime, outage):
    """ZooKeeper frozen (SIGSTOP: every session expires) or stopped for 20 s (longer than dead_after), then back:
    every keepalive is old when it returns, but no node is judged dead before it has had a full dead_after window
    to write one, so none is fenced, no VM moves, and a primary is elected again."""
    specs = [start_on(runtime, node, f"zo-{node}")[0] for node in runtime.nodes]
    timers = runtime.cfg.timers
    assert timers.keepalive_interval * timers.dead_after < 20
    for _ in range(2 if outage == "freeze" else 1):  # who reconnects first is a race: give it two chances
        if outage == "freeze":
            runtime.zk.freeze()
            time.sleep(20)
            runtime.zk.freeze(False)
        else:
            runtime.zk.stop()
            time.sleep(20)
            runtime.zk.start()
        wait_until("ZooKeeper back", lambda: runtime.state.nodes(), 30)
        seen = watch_nodes(runtime, timers.keepalive_interval * timers.dead_after * 3)
        assert seen == [], seen
    assert not [f for f in runtime.state.faults() if f.kind in ("node-dead", "fence-failed")]
    wait_until("a primary", lambda: runtime.state.primary() is not None, 15)
    wait_until("every node running", lambda: all(r.daemon_state == "run" for r in runtime.state.nodes()), 15)
    for spec in specs:
        assert runtime.where(spec.uuid) == [spec.node]
        assert runtime.state.vm(spec.uuid).node == spec.node


def test_a_failed_fence_is_retried(runtime):
    """The dead node's BMC does not answer at first (its simulated server is frozen): the fence fails, a fault says
    when it is tried again, its VMs stay put; once the BMC answers, the retry fences the node and its VMs restart
    elsewhere."""
    victim = next(n for n in runtime.nodes if n != runtime.state.primary())
    specs = start_on(runtime, victim, "retry-a", "retry-b")
    with stopped(runtime.machines[victim].pid):  # its BMC
        runtime.power_loss(victim)
        wait_until(
            f"{victim}'s fence failed",
            lambda: (f := runtime.state.node(victim).fence) is not None and f.state == "failed",
            60,
            interval=0.2,
        )
        failed = runtime.state.node(victim).fence
        assert failed.attempts == 1 and failed.retry_at_ms > 0, failed
        fault = next(f for f in runtime.state.faults() if f.id == f"fence-failed-{victim}")
        assert "trying again in" in fault.message, fault
        for spec in specs:  # not confirmed off: nothing restarts
            assert runtime.state.vm(spec.uuid).node == victim
    wait_until(f"{victim} fenced", lambda: runtime.state.node(victim).daemon_state == "fenced", 60, interval=0.2)
    fence = runtime.state.node(victim).fence
    assert fence.state == "off" and fence.attempts >= 2, fence
    for spec in specs:
        wait_until(f"{spec.name} elsewhere", functools.partial(moved_off, runtime, spec, victim), 60)
    wait_until("the fault cleared", lambda: all(f.id != f"fence-failed-{victim}" for f in runtime.state.faults()), 10)


def test_the_next_primary_finishes_a_fence_in_flight(runtime):
    """The primary's pvcd dies (and is restarted) while a fence it runs waits on a slow BMC: the next primary finds
    the fence in the node's record, takes it over and finishes it; the VMs restart elsewhere exactly once."""
    first = runtime.state.primary()
    victim = next(n for n in runtime.nodes if n != first)
    specs = start_on(runtime, victim, "inflight-a")
    with stopped(runtime.machines[victim].pid):  # its BMC: the power-off waits (ipmitool retries, then fails)
        runtime.power_loss(victim)
        wait_until(
            "the fence in flight",
            lambda: (f := runtime.state.node(victim).fence) is not None and f.state == "fencing",
            60,
            interval=0.05,
        )
        assert runtime.state.node(victim).fence.by == first
        runtime.restart_pvcd(first)
        wait_until("another primary", lambda: runtime.state.primary() not in (None, first), 30, interval=0.1)
        second = runtime.state.primary()
        wait_until(f"{second} to take the fence over", lambda: runtime.state.node(victim).fence.by == second, 30)
    wait_until(f"{victim} fenced", lambda: runtime.state.node(victim).daemon_state == "fenced", 60, interval=0.2)
    assert runtime.state.node(victim).fence.by == second
    for spec in specs:
        wait_until(f"{spec.name} elsewhere", functools.partial(moved_off, runtime, spec, victim), 60)
    wait_until(f"{first} back", lambda: runtime.state.node(first).daemon_state == "run", 30)
    assert runtime.state.node(first).fence is None


# -- a stalled primary -------------------------------------------------------------------------------------------
def test_a_frozen_primary_is_replaced_and_steps_down(runtime):
    """The primary's pvcd is frozen (SIGSTOP): its session expires, another coordinator becomes primary and takes
    the floating IP; the frozen node is not fenced (its libvirtd answers: stalled, not dead). Resumed (SIGCONT),
    the old primary steps down — its session is a new one — and does not take the primary's znode back: the
    floating IP is on one node only, and nobody is fenced."""
    old = runtime.state.primary()
    assert holders_of_floating_ip(runtime) == [old]
    timers = runtime.cfg.timers
    with stopped(runtime.pvcd_pid(old)):
        wait_until("a new primary", lambda: runtime.state.primary() not in (None, old), 30, interval=0.1)
        new = runtime.state.primary()
        wait_until("the floating IP on the new primary", lambda: new in holders_of_floating_ip(runtime), 10)
        time.sleep(timers.keepalive_interval * (timers.dead_after + 1))  # long enough to be judged
        assert runtime.state.node(old).daemon_state == "run" and runtime.state.node(old).fence is None
    wait_until("the floating IP on one node", lambda: holders_of_floating_ip(runtime) == [new], 15, interval=0.2)
    seen = watch_nodes(runtime, 5)
    assert seen == [], seen
    assert runtime.state.primary() == new and holders_of_floating_ip(runtime) == [new]
    wait_until(f"{old} running", lambda: runtime.state.node(old).daemon_state == "run", 15)


def test_a_primary_whose_election_thread_stalls_steps_down(runtime):
    """One thread of the primary's pvcd blocks (ptrace stops its election thread; kazoo keeps its session alive, so
    ZooKeeper sees nothing wrong): within timers.watchdog its own check gives up the election and the floating IP,
    and another coordinator takes over; it stops telling systemd it is alive, whose watchdog restarts it; it comes
    back as a plain coordinator. Nobody is fenced."""
    old = runtime.state.primary()
    pid = runtime.pvcd_pid(old)
    watchdog = runtime.cfg.timers.watchdog
    with frozen_thread(pid, "election"):
        t0 = time.monotonic()
        wait_until("a new primary", lambda: runtime.state.primary() not in (None, old), 3 * watchdog, interval=0.2)
        took = time.monotonic() - t0
        new = runtime.state.primary()
        wait_until("the floating IP moved", lambda: holders_of_floating_ip(runtime) == [new], 10, interval=0.2)
        fault = next(f for f in runtime.state.faults() if f.id == f"primary-stalled-{old}")
        assert "election" in fault.message, fault
        wait_until("systemd's watchdog to restart the stalled pvcd", lambda: runtime.pvcd_pid(old) != pid, 4 * watchdog)
    assert watchdog <= took < 2 * watchdog, took
    log = runtime.notify_log(old).read_text()
    assert "watchdog: no WATCHDOG=1" in log, log[-2000:]
    wait_until(f"{old} back", lambda: runtime.state.node(old).daemon_state == "run", 30)
    assert runtime.state.primary() == new and holders_of_floating_ip(runtime) == [new]
    assert all(r.fence is None and r.daemon_state == "run" for r in runtime.state.nodes())


# -- migrations ------------------------------------------------------------------------------------------------
def incoming_qemu_pid(cluster, node: str, name: str) -> int:
    return int((cluster.libvirt_root(node) / "run" / "qemu" / f"{name}.pid").read_text())


def wait_migration_streaming(cluster, source: str, vm_uuid: str) -> None:
    conn = libvirt.open(cluster.libvirt_uri(source))
    try:
        dom = conn.lookupByUUIDString(vm_uuid)

        def streaming() -> bool:
            stats = dom.jobStats()
            return stats.get("type") == libvirt.VIR_DOMAIN_JOB_UNBOUNDED and stats.get("memory_processed", 0) > 0

        wait_until("the migration to stream memory", streaming, 30, interval=0.02)
    finally:
        conn.close()


@pytest.mark.parametrize("runtime", [{"bandwidth_mib": 1}], indirect=True)  # a migration slow enough to catch
@pytest.mark.parametrize("method", ["live-only", "live"])
def test_a_migration_that_does_not_converge_is_aborted(runtime, method):
    """The target's QEMU freezes mid-copy (SIGSTOP): after the VM's migration timeout (its own, 8 s) the migration
    is aborted and the VM runs on where it was; the task fails with the reason and a fault says so. A live-only VM
    stays by its method; a live one does not fall back to a shutdown migration either, because the target still
    holds the aborted incoming copy."""
    (spec,) = start_on(runtime, "n1", f"stuck-{method}", migration={"method": method, "timeout_s": 8})
    _, task = actions.move_vm(runtime.state, spec.name, "migrate", target="n2")
    wait_migration_streaming(runtime, "n1", spec.uuid)
    qemu = incoming_qemu_pid(runtime, "n2", spec.name)
    t0 = time.monotonic()
    with stopped(qemu):
        wait_until("the task to end", lambda: runtime.state.task(task.id).state != "running", 60, interval=0.2)
        took = time.monotonic() - t0
        ended = runtime.state.task(task.id)
        assert ended.state == "failed", ended
        assert "did not finish within 8s and was aborted; it stays on n1" in ended.message, ended
        why = "it is a live-only VM" if method == "live-only" else "n2 still holds the aborted incoming copy"
        assert why in ended.message, ended
        assert 8 <= took < 30, took
        assert runtime.where(spec.uuid) == ["n1"]
        assert runtime.state.vm(spec.uuid).node == "n1" and runtime.state.vm(spec.uuid).state == "start"
        fault = next(f for f in runtime.state.faults() if f.id == f"migration-{spec.uuid}")
        assert "aborted" in fault.message
    runtime.wait_running(spec, "n1")


@pytest.mark.parametrize("runtime", [{"bandwidth_mib": 1}], indirect=True)
def test_a_vm_does_not_stay_in_migrate_when_its_source_restarts(runtime):
    """The source's pvcd is killed (and restarted) while its libvirtd carries a migration out: whatever libvirt
    did with it, the VM ends in `start`, running once, on its home — without either daemon being dead."""
    (spec,) = start_on(runtime, "n1", "handoff")
    actions.move_vm(runtime.state, spec.name, "migrate", target="n2")
    wait_migration_streaming(runtime, "n1", spec.uuid)
    runtime.restart_pvcd("n1")
    wait_until("the VM out of migrate", lambda: runtime.state.vm(spec.uuid).state == "start", 60, interval=0.2)
    home = runtime.state.vm(spec.uuid).node
    runtime.wait_running(spec, home)
    assert all(r.daemon_state == "run" for r in runtime.state.nodes())


def test_flush_reports_the_vms_that_stayed(runtime):
    """A flush whose VM cannot leave (live-only, its only possible target's libvirtd is dead) fails naming it, and
    the node stays `flushing` (not `flushed`: it is not safe to power off); the other VM moved."""
    (stuck,) = start_on(
        runtime, "n1", "fl-stuck", migration={"method": "live-only"}, placement={"node_limit": ["n1", "n2"]}
    )
    (mover,) = start_on(runtime, "n1", "fl-mover", placement={"node_limit": ["n1", "n3"]})
    runtime.kill_libvirtd("n2")
    task = actions.flush_node(runtime.state, "n1")
    wait_until("the flush to end", lambda: runtime.state.task(task.id).state in ("succeeded", "failed"), 120)
    ended = runtime.state.task(task.id)
    assert ended.state == "failed" and "1 of 2 VM(s) moved" in ended.message and "fl-stuck" in ended.message, ended
    assert runtime.state.node("n1").domain_state == "flushing"
    runtime.wait_running(mover, "n3")
    runtime.wait_running(stuck, "n1")
    time.sleep(3)  # not run again by itself
    assert runtime.state.task(task.id).state == "failed" and runtime.state.node("n1").domain_state == "flushing"


# -- libvirt ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("runtime", [{"libvirt_restart_after": 10}], indirect=True)
def test_a_hung_libvirtd_freezes_no_worker_and_is_restarted(runtime):
    """libvirtd stops answering (SIGSTOP) while VMs are to start: every call gives up within its deadline, so the
    VM workers (fewer than the VMs) each come back and say what they wait for, the keepalive goes on, and the
    fault appears; SIGCONT and it recovers. Hung again for timers.libvirt_restart_after: pvcd restarts it."""
    node = next(n for n in runtime.nodes if n != runtime.state.primary())
    specs = [runtime.define(f"hung-{i}", node=node) for i in range(6)]  # more than the 4 VM workers
    pid = int((runtime.libvirt_root(node) / "libvirtd.pid").read_text())
    with stopped(pid):
        wait_until("the libvirt fault", lambda: any(f.id == f"libvirt-{node}" for f in runtime.state.faults()), 15)
        for spec in specs:
            actions.change_state(runtime.state, spec.name, "start")
        wait_until(
            "every VM to say it waits for libvirt",
            lambda: all("libvirt" in runtime.state.vm_status(s.uuid).reason for s in specs),
            45,
            interval=0.5,
        )
        assert runtime.state.node(node).daemon_state == "run"
        before = runtime.state.keepalive(node)[1]
        time.sleep(2 * runtime.cfg.timers.keepalive_interval)
        assert runtime.state.keepalive(node)[1] > before, "the keepalive stopped"
    for spec in specs:
        runtime.wait_running(spec, node, timeout=60)
    wait_until("the fault cleared", lambda: all(f.id != f"libvirt-{node}" for f in runtime.state.faults()), 15)

    # hung again, for good: pvcd restarts it (its QEMUs live on)
    old = int((runtime.libvirt_root(node) / "libvirtd.pid").read_text())
    os.kill(old, signal.SIGSTOP)
    wait_until("libvirtd restarted", lambda: not os.path.exists(f"/proc/{old}"), 60, interval=0.5)
    fault = wait_until(
        "a fault saying so",
        lambda: next((f for f in runtime.state.faults() if f.id == f"libvirt-restarted-{node}"), None),
        15,
    )
    assert "pvcd restarted libvirtd" in fault.message and fault.node == node, fault
    wait_until("the fault cleared", lambda: all(f.id != f"libvirt-{node}" for f in runtime.state.faults()), 30)
    for spec in specs:
        runtime.wait_running(spec, node)
    # the restart's own fault stays once libvirt answers again, until an administrator clears it
    assert any(f.id == f"libvirt-restarted-{node}" for f in runtime.state.faults())
    runtime.state.clear_fault(f"libvirt-restarted-{node}")
    assert all(r.fence is None for r in runtime.state.nodes())


# -- bounded growth --------------------------------------------------------------------------------------------
def test_a_flooding_console_is_bounded(runtime):
    """A guest prints to its serial port as fast as it can: its console ring in ZooKeeper is written at most once a
    second and stays within its size, and the console file on disk stays bounded."""
    kernel = console_flood_kernel(runtime.dir / "flood.bin")
    vm_uuid = str(uuid.uuid4())
    path = runtime.dir / "n2" / "state" / "console" / f"{vm_uuid}.log"
    # started first, under the VM's UUID: pvcd then finds its VM running at home and tails its console. Its VM
    # workers wait meanwhile: one that saw the new VM while still `stop` would destroy the domain (rightly).
    pid = runtime.pvcd_pid("n2")
    with contextlib.ExitStack() as frozen:
        for name in thread_names(pid, "vm-worker-"):
            frozen.enter_context(frozen_thread(pid, name))
        conn = libvirt.open(runtime.libvirt_uri("n2"))
        try:
            conn.createXML(flood_domain_xml("flood", vm_uuid, kernel, path), 0)
        finally:
            conn.close()
        spec = runtime.define("flood", node="n2", vm_uuid=vm_uuid)
        actions.change_state(runtime.state, "flood", "start")
    runtime.wait_running(spec, "n2")
    wait_until("console lines in ZooKeeper", lambda: len(runtime.state.console(spec.uuid)) > 10, 30)
    znode = layout.vm_console(spec.uuid)
    first = runtime.client.exists(znode).version
    largest, t0 = 0, time.monotonic()
    while time.monotonic() - t0 < 15:
        with contextlib.suppress(FileNotFoundError):
            largest = max(largest, path.stat().st_size)
        time.sleep(0.05)
    writes = runtime.client.exists(znode).version - first
    elapsed = time.monotonic() - t0
    assert 0 < writes <= elapsed + 1, f"{writes} writes in {elapsed:.1f}s"
    ring = runtime.state.console(spec.uuid)
    assert sum(len(line.encode()) + 1 for line in ring) <= CONSOLE_BYTES
    assert set(ring[1:]) <= {"x" * 64} and ring, ring[:3]  # whole lines (the first may be a "skipped" note)
    # QEMU writes between two passes (0.5 s) at most what it prints in that time; the file is cut at MAX_FILE_BYTES
    assert largest < 4 * MAX_FILE_BYTES, largest


def test_a_full_disk_raises_a_fault(runtime):
    """A file system the keepalive watches (the harness gives each node a 1 MiB one) goes above 80 %: the keepalive
    reports it and a fault says so; below again, the fault clears."""
    mount = runtime.disk_dir("n3")
    fault_id = f"disk-full-n3-{str(mount).strip('/').replace('/', '-')}"
    assert runtime.state.keepalive("n3")[0].disk_used_pct[str(mount)] < 80
    (mount / "fill").write_bytes(b"\0" * 900 * 1024)
    wait_until("the disk-full fault", lambda: any(f.id == fault_id for f in runtime.state.faults()), 15)
    keepalive = runtime.state.keepalive("n3")[0]
    assert keepalive.disk_used_pct[str(mount)] >= 80, keepalive.disk_used_pct
    (mount / "fill").unlink()
    wait_until("the fault cleared", lambda: all(f.id != fault_id for f in runtime.state.faults()), 15)
