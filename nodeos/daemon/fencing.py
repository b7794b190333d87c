"""Dead-node detection, IPMI fencing and recovery of the dead node's VMs. Runs on the primary coordinator only, in
its own thread (a pass every FENCE_PASS seconds), with one worker thread per fence in flight.

Rules (docs/runtime.md, "Fencing"):
- A node is **dead** when its keepalive is older than `timers.dead_after` intervals, counted from the later of its
  last keepalive and the start of this primary's term (a term starts when a coordinator wins the election, and so
  again after every lost ZooKeeper connection): after a ZooKeeper outage or a primary change every node has a full
  window to report in. A node whose keepalive is old but whose pvcd still holds its ZooKeeper session (its `alive`
  znode), or whose libvirtd still answers over the cluster network, is **stalled**, not dead: its VMs run there. A
  fault says so, and its watchdog (or systemd) restarts that pvcd; a pvcd that crashes or starts slowly never gets
  its node powered off.
- A dead node is powered off through its BMC; only after its BMC confirms the power-off are its VMs restarted
  elsewhere (unless `fencing.on_failure = "migrate"`).
- No fence starts while more than half of the cluster's nodes are dead or fenced: then this primary, not they, is
  more likely the one cut off (a fault says so, and it waits). At most `fencing.max_concurrent` fences run at once.
- A fence that fails is tried again after `fencing.retry_after` seconds, doubling to at most MAX_BACKOFF; a fenced
  node whose VMs were not all restarted is recovered again the same way. A fence's progress (state, attempts, next
  try, the primary running it) is in the node's record, so the next primary resumes it; a write by a primary that
  no longer runs the fence is refused.

Times are on ZooKeeper's clock (znode mtimes), so node clocks do not matter.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pvc.nodeos.daemon.watchdog import controller_thread
from pvc.nodeos.ipmi import Bmc, IpmiError
from pvc.nodeos.state import placement
from pvc.nodeos.state.models import FenceInfo, NodeRecord, VmSpec, VmStatus
from pvc.nodeos.state.store import NotFound
from pvc.nodeos.state.vmstate import RUNNING_STATES, handed_off

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)

FENCE_PASS = 0.5  # seconds between two passes of the fencer
CONFIRM_TIMEOUT = 10.0  # seconds the BMC has to confirm a power-off
CONFIRM_POLL = 0.2
MAX_BACKOFF = 300  # seconds between two tries of a failing fence, at most
RECOVER_STEP = 120.0  # seconds one VM's recovery may take (its disks' locks: Ceph calls with their own deadlines)
QUORUM_FAULT = "fence-quorum"
PROBE_TIMEOUT = 2.0  # seconds a suspect node's libvirtd has to answer before it counts as dead
PROBE_EVERY = 5.0  # seconds a "libvirtd answers" stays believed before the next probe

# Called for each VM of a fenced node before it restarts elsewhere (the storage layer breaks its RBD locks).
BeforeRestart = Callable[[VmSpec, str], None]


@dataclass(frozen=True)
class Verdict:
    dead: dict[str, int]  # node -> age of its keepalive (ms): no keepalive and no session
    stalled: dict[str, int]  # node -> age (ms): no keepalive, but its pvcd's session is alive


def suspects(
    records: list[NodeRecord], mtimes: dict[str, int], me: str, now_ms: int, term_ms: int, limit_ms: int
) -> dict[str, int]:
    """Nodes (other than `me`) up by their record whose keepalive is too old: node -> its age (ms). Age is counted
    from the later of the keepalive and the term's start, so that no node is judged before it had a full window."""
    out: dict[str, int] = {}
    for r in records:
        if r.name == me or r.daemon_state not in ("init", "run"):
            continue
        last = mtimes.get(r.name, 0)
        if now_ms - max(last, term_ms) > limit_ms:
            out[r.name] = now_ms - last
    return out


def quorum_lost(records: list[NodeRecord], total: int) -> list[str]:
    """The dead or fenced nodes, if they are more than half of the cluster's `total` nodes (else [])."""
    lost = sorted(r.name for r in records if r.daemon_state in ("dead", "fenced"))
    return lost if len(lost) * 2 > total else []


def backoff_s(attempts: int, first: int) -> int:
    """Seconds before the next try after `attempts` failed ones: first, 2 × first, 4 × first ... ≤ MAX_BACKOFF."""
    return min(MAX_BACKOFF, first * 2 ** max(0, attempts - 1))


@dataclass(frozen=True)
class Job:
    node: str
    kind: str  # "power-off": fence a dead node; "recover": restart the VMs of a fenced one


def due(records: list[NodeRecord], me: str, now_ms: int, running: set[str]) -> list[Job]:
    """What the fencer should start now: dead nodes never fenced, failed fences whose retry time came, fences left
    `fencing` by a primary that no longer runs them, and fenced nodes whose VMs are not all recovered."""
    jobs = []
    for r in sorted(records, key=lambda r: r.name):
        f = r.fence
        if r.name == me or r.name in running:
            continue
        if r.daemon_state == "dead" and (
            f is None or f.state == "fencing" or (f.state == "failed" and now_ms >= f.retry_at_ms)
        ):
            jobs.append(Job(r.name, "power-off"))
        elif r.daemon_state == "fenced" and f and f.state == "off" and not f.recovered and now_ms >= f.retry_at_ms:
            jobs.append(Job(r.name, "recover"))
    return jobs


class Fencer:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.me = daemon.node.name
        self.before_restart: list[BeforeRestart] = []
        self.term_ms: int | None = None  # when this primary's term began (ZooKeeper's clock); None: not primary
        self.workers: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._stalled: set[str] = set()
        self._answered: dict[str, float] = {}  # node -> when its libvirtd last answered a probe (monotonic)
        self._quorum_said = 0.0
        self.thread = controller_thread("fencer", self._loop)

    # -- the primary's term --------------------------------------------------------------------------------------
    def start(self) -> None:
        self.thread.start()

    def begin_term(self, since_ms: int) -> None:
        self.term_ms = since_ms

    def end_term(self) -> None:
        self.term_ms = None

    def acting(self) -> bool:
        return self.term_ms is not None and not self.d.stopping.is_set()

    def _loop(self) -> None:
        while not self.d.stopping.wait(FENCE_PASS):
            self.d.progress.beat("fencer")
            if self.term_ms is None:
                continue
            try:
                self.check(self.d.keepalive.zk_now_ms())
            except Exception:
                log.exception("fencing pass failed")

    # -- one pass ------------------------------------------------------------------------------------------------
    def check(self, now_ms: int) -> None:
        """Mark nodes dead (or stalled), then start the fences and recoveries that are due."""
        term_ms = self.term_ms
        if term_ms is None or not self.d.state.is_primary_session():
            return  # not primary, or a session that has expired (a primary that was frozen, back now)
        timers = self.d.cfg.timers
        limit_ms = timers.dead_after * timers.keepalive_interval * 1000
        records = self.d.state.nodes()
        mtimes = {}
        for r in records:
            ka = self.d.state.keepalive(r.name)
            if ka is not None:
                mtimes[r.name] = ka[1]
        late = suspects(records, mtimes, self.me, now_ms, term_ms, limit_ms)
        marked = False
        for name, age_ms in late.items():
            if self.d.state.node_alive(name):
                self._say_stalled(name, age_ms, "its pvcd still holds its ZooKeeper session")
            elif self._libvirt_answers(name):
                self._say_stalled(name, age_ms, "its libvirtd answers (its VMs run there)")
            elif self.acting():
                marked = self._mark_dead(name, age_ms) or marked
                if name in self._stalled:
                    self.d.state.clear_fault(f"node-stalled-{name}")
                    self._stalled.discard(name)
        for name in self._stalled - set(late):
            self.d.state.clear_fault(f"node-stalled-{name}")
            self._stalled.discard(name)
        if not self.d.cfg.fencing.enabled or self.d.state.maintenance():
            return
        self._start_due(self.d.state.nodes() if marked else records, now_ms)

    def _libvirt_answers(self, name: str) -> bool:
        """The second signal before a node counts as dead: does its libvirtd answer over the cluster network?"""
        if time.monotonic() - self._answered.get(name, -PROBE_EVERY) < PROBE_EVERY:
            return True
        try:
            uri = self.d.migration_uri(name)
        except KeyError:
            return False
        if self.d.virt.remote_domains(uri, PROBE_TIMEOUT) is None:
            self._answered.pop(name, None)
            return False
        self._answered[name] = time.monotonic()
        return True

    def _say_stalled(self, name: str, age_ms: int, why: str) -> None:
        if name not in self._stalled:
            message = (
                f"node {name} sent no keepalive for {age_ms / 1000:.1f}s but {why}: its pvcd is stalled or down, "
                "the node is not dead (not fenced; systemd restarts pvcd)"
            )
            log.warning(message)
            self.d.state.raise_fault(f"node-stalled-{name}", "node-stalled", message, node=name)
            self._stalled.add(name)

    def _mark_dead(self, name: str, age_ms: int) -> bool:
        marked = False

        def dead(r: NodeRecord) -> NodeRecord | None:
            nonlocal marked
            marked = r.daemon_state in ("init", "run")  # (the last call's answer is the one written)
            return r.model_copy(update={"daemon_state": "dead", "fence": None}) if marked else None

        self.d.state.update_node(name, dead)
        if marked:
            message = f"node {name} is dead: no keepalive for {age_ms / 1000:.1f}s"
            log.warning(message)
            self.d.state.raise_fault(f"node-dead-{name}", "node-dead", message, node=name)
        return marked

    def _start_due(self, records: list[NodeRecord], now_ms: int) -> None:
        with self._lock:
            running = set(self.workers)
        jobs = due(records, self.me, now_ms, running)
        lost = quorum_lost(records, len(self.d.cfg.nodes))
        if lost and any(j.kind == "power-off" for j in jobs):
            self._say_no_quorum(lost, len(self.d.cfg.nodes))
            jobs = [j for j in jobs if j.kind != "power-off"]
        elif not lost and self._quorum_said:
            self.d.state.clear_fault(QUORUM_FAULT)
            self._quorum_said = 0.0
        slots = self.d.cfg.fencing.max_concurrent - len(running)
        for job in jobs[: max(0, slots)]:
            worker = controller_thread(f"fence-{job.node}", functools.partial(self._work, job))
            with self._lock:
                self.workers[job.node] = worker
            worker.start()

    def _say_no_quorum(self, lost: list[str], total: int) -> None:
        if time.monotonic() - self._quorum_said < 30:
            return
        message = (
            f"{len(lost)} of {total} nodes are dead or fenced ({', '.join(lost)}): no fence while more than half "
            "of the cluster is lost (this primary may be the one cut off); waiting"
        )
        log.error(message)
        self.d.state.raise_fault(QUORUM_FAULT, "fence-quorum", message)
        self._quorum_said = time.monotonic()

    # -- a fence (its own thread) --------------------------------------------------------------------------------
    def _work(self, job: Job) -> None:
        name = f"fence-{job.node}"
        try:
            self.d.progress.beat(name, allow=3 * CONFIRM_TIMEOUT)
            if job.kind == "power-off":
                self.fence(job.node)
            else:
                self._resume_recovery(job.node)
        except Exception:
            log.exception("fencing node %s failed", job.node)
        finally:
            self.d.progress.forget(name)
            with self._lock:
                self.workers.pop(job.node, None)

    def _update_mine(self, node: str, change: Callable[[NodeRecord], NodeRecord | None]) -> NodeRecord | None:
        """Change the node's record only while this primary runs its fence (fence.by); None if refused."""

        def mine(r: NodeRecord) -> NodeRecord | None:
            if r.fence is None or r.fence.by != self.me or not self.acting():
                return None
            return change(r)

        record = self.d.state.update_node(node, mine)
        return record if record.fence is not None and record.fence.by == self.me else None

    def fence(self, name: str) -> bool:
        """Power the dead node off, confirmed by its BMC; then recover its VMs. Returns whether it is off."""

        def claim(r: NodeRecord) -> NodeRecord | None:
            if r.daemon_state != "dead" or not self.acting():
                return None
            attempts = (r.fence.attempts if r.fence else 0) + 1
            info = FenceInfo(state="fencing", message=f"powering off (attempt {attempts})", attempts=attempts)
            return r.model_copy(update={"fence": info.model_copy(update={"by": self.me})})

        record = self.d.state.update_node(name, claim)
        if record.daemon_state != "dead" or record.fence is None or record.fence.by != self.me:
            return False  # back alive meanwhile, or no longer ours to fence
        attempts = record.fence.attempts
        try:
            confirmed, message = self._power_off(name)
        except Exception as exc:  # whatever it was, the fence failed: say so, and try again later
            confirmed, message = False, f"{type(exc).__name__}: {exc}"
        if not confirmed:
            self._failed(name, attempts, message)
            return False
        log.warning("fenced node %s: %s", name, message)
        done = self._update_mine(
            name,
            lambda r: r.model_copy(
                update={
                    "daemon_state": "fenced",
                    "domain_state": "flushed",
                    "fence": r.fence.model_copy(  # type: ignore[union-attr]
                        update={
                            "state": "off",
                            "message": message,
                            "at": time.time(),
                            "recovered": self.d.cfg.fencing.on_success != "migrate",
                        }
                    ),
                }
            ),
        )
        if done is None:
            return True
        self.d.state.clear_fault(f"fence-failed-{name}")
        if self.d.cfg.fencing.on_success == "migrate":
            self._recover_fenced(name, 0)
        else:
            self._power_on(name)
        return True

    def _power_off(self, name: str) -> tuple[bool, str]:
        node_cfg = next((n for n in self.d.cfg.nodes if n.name == name), None)
        if node_cfg is None or node_cfg.ipmi is None:
            return False, f"node {name} has no [nodes.ipmi] in cluster.toml"
        if not self.acting():
            return False, "this node is no longer the primary"
        try:
            bmc = Bmc.from_config(node_cfg.ipmi, self.d.base_dir)
            started = time.monotonic()
            bmc.power_off()
            self.d.progress.beat(f"fence-{name}", allow=3 * CONFIRM_TIMEOUT)
            if bmc.confirm_off(timeout=CONFIRM_TIMEOUT, interval=CONFIRM_POLL):
                return True, f"powered off, confirmed by its BMC in {time.monotonic() - started:.1f}s"
            return False, f"the BMC did not confirm power-off within {CONFIRM_TIMEOUT:.0f}s"
        except IpmiError as exc:
            return False, str(exc)

    def _failed(self, name: str, attempts: int, message: str) -> None:
        cfg = self.d.cfg.fencing
        wait = backoff_s(attempts, cfg.retry_after)
        retry_at = self.d.keepalive.zk_now_ms() + wait * 1000
        log.error("fencing node %s failed (attempt %d): %s; trying again in %ds", name, attempts, message, wait)
        recorded = self._update_mine(
            name,
            lambda r: r.model_copy(
                update={
                    "fence": FenceInfo(
                        state="failed", message=message, attempts=attempts, retry_at_ms=retry_at, by=self.me
                    )
                }
            ),
        )
        if recorded is None:
            return
        self.d.state.raise_fault(
            f"fence-failed-{name}",
            "fence-failed",
            f"could not fence node {name} (attempt {attempts}): {message}; trying again in {wait}s; its VMs stay "
            "assigned to it",
            node=name,
        )
        if cfg.on_failure == "migrate" and attempts == 1:
            self.recover(name, "fence failed, on_failure = migrate")

    def _resume_recovery(self, name: str) -> None:
        def claim(r: NodeRecord) -> NodeRecord | None:
            f = r.fence
            if r.daemon_state != "fenced" or f is None or f.state != "off" or f.recovered or not self.acting():
                return None
            return r.model_copy(update={"fence": f.model_copy(update={"by": self.me})})

        record = self.d.state.update_node(name, claim)
        if record.fence is None or record.fence.by != self.me or record.fence.recovered:
            return
        log.warning("node %s: resuming the recovery of its VMs", name)
        self._recover_fenced(name, record.fence.recoveries)

    def _recover_fenced(self, name: str, failed_before: int) -> None:
        """Recover a fenced node's VMs; record whether every one was, and power the node on once they all were."""
        errors = self.recover(name, "fenced")
        if errors:
            wait = backoff_s(failed_before + 1, self.d.cfg.fencing.retry_after)
            retry_at = self.d.keepalive.zk_now_ms() + wait * 1000
            message = f"recovery incomplete ({'; '.join(errors)}); trying again in {wait}s"
            log.error("node %s: %s", name, message)
            self._update_mine(
                name,
                lambda r: r.model_copy(
                    update={
                        "fence": r.fence.model_copy(  # type: ignore[union-attr]
                            update={"retry_at_ms": retry_at, "message": message, "recoveries": failed_before + 1}
                        )
                    }
                ),
            )
            self.d.state.raise_fault(f"recover-failed-{name}", "recover-failed", f"node {name}: {message}", node=name)
            return
        self._update_mine(
            name,
            lambda r: r.model_copy(update={"fence": r.fence.model_copy(update={"recovered": True})}),  # type: ignore[union-attr]
        )
        self.d.state.clear_fault(f"recover-failed-{name}")
        self._power_on(name)

    def _power_on(self, name: str) -> None:
        node_cfg = next((n for n in self.d.cfg.nodes if n.name == name), None)
        if not self.d.cfg.fencing.power_on_after or node_cfg is None or node_cfg.ipmi is None:
            return
        try:
            Bmc.from_config(node_cfg.ipmi, self.d.base_dir).power_on()
        except IpmiError as exc:
            log.warning("could not power node %s back on: %s", name, exc)

    # -- recovery ------------------------------------------------------------------------------------------------
    def recover(self, dead: str, why: str) -> list[str]:
        """Restart elsewhere every VM that was running (or meant to run) on the dead node. A VM whose disks cannot
        be prepared (their locks broken) stays assigned to the dead node: returns what failed, for a later try."""
        errors: list[str] = []
        candidates = self.d.candidates()
        for spec in self.d.state.vms():
            status = self.d.state.vm_status(spec.uuid)
            on_dead = spec.node == dead and spec.state in RUNNING_STATES
            leaving_dead = spec.state == "migrate" and status.node == dead and spec.node != dead
            if not (on_dead or leaving_dead):
                continue
            self.d.progress.beat(f"fence-{dead}", allow=RECOVER_STEP)
            try:
                for hook in self.before_restart:
                    hook(spec, dead)
            except Exception as exc:
                log.error("VM %s: preparing its disks failed: %s; it waits", spec.name, exc)
                errors.append(f"VM {spec.name}: {exc}")
                reason = f"node {dead} {why}; waiting to restart it: {exc}"
                self.d.state.set_vm_status(spec.uuid, VmStatus(state="stopped", node=dead, reason=reason))
                continue
            self.d.state.set_vm_status(spec.uuid, VmStatus(state="stopped", node=dead, reason=f"node {dead} {why}"))
            if leaving_dead:  # its new home starts it: hand the migration off for the dead source
                self._update(spec, _migrated)
                continue
            try:
                target = placement.choose(spec, candidates, self.d.cfg.migration.selector, exclude={dead})
            except placement.NoTarget as exc:
                log.error("VM %s from %s: %s; it stays stopped and starts when %s is ready", spec.name, dead, exc, dead)
                self._update(
                    spec,
                    lambda s: s.with_autostart(True).model_copy(update={"state": "stop"}),
                )
                continue
            log.warning("VM %s: restarting on %s (node %s %s)", spec.name, target, dead, why)
            self._update(spec, _restart_on(target, dead))
        return errors

    def _update(self, spec: VmSpec, change: Callable[[VmSpec], VmSpec | None]) -> None:
        with contextlib.suppress(NotFound):
            self.d.state.update_vm(spec.uuid, change)


def _restart_on(target: str, dead: str) -> Callable[[VmSpec], VmSpec | None]:
    """The change that moves a VM still homed on the dead node to `target` and starts it there."""

    def change(s: VmSpec) -> VmSpec | None:
        return s.model_copy(update={"node": target, "last_node": dead, "state": "start"}) if s.node == dead else None

    return change


def _migrated(spec: VmSpec) -> VmSpec | None:
    new = handed_off("migrated", spec.state)
    return None if new is None else spec.model_copy(update={"state": new})
