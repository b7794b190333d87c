"""Node flush and ready: move every running VM off this node, one at a time, and bring them back.

The API writes `domain_state = "flushing"` (or `"unflushing"`) and a task id on the node's record; this node does
the work, reports progress in the task, and ends in `flushed` (or `ready`). A flush ends `flushed` only when every VM
left: otherwise its task fails naming the VMs that stayed, and the node stays `flushing` (a new flush request tries
again; `pvc node ready` gives up).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from pvc.nodeos.daemon import migration
from pvc.nodeos.daemon.watchdog import controller_thread
from pvc.nodeos.state import placement
from pvc.nodeos.state.models import VmSpec, VmStatus
from pvc.nodeos.state.store import NotFound
from pvc.nodeos.state.vmstate import RUNNING_STATES

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)
# Whether a VM's move is over: True (done), False (it failed: the VM stays), None (not yet).
Moved = Callable[[VmSpec, VmStatus], bool | None]


class FlushController:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.me = daemon.node.name
        self._wake = threading.Event()
        self.thread = controller_thread("flush", self._loop)
        self.move_timeout = self.timeout(None)

    def start(self) -> None:
        self.d.state.watch_node(self.me, self._on_record)
        self.thread.start()

    def _on_record(self, data: bytes | None, stat: object) -> bool:
        self._wake.set()
        return not self.d.stopping.is_set()

    def _loop(self) -> None:
        while not self.d.stopping.is_set():
            self.d.progress.beat("flush", allow=self.move_timeout)
            self._wake.wait(timeout=self.d.cfg.timers.keepalive_interval)
            self._wake.clear()
            try:
                record = self.d.state.node(self.me)
                if record.daemon_state != "run" or self._ended(record.task):
                    continue
                if record.domain_state == "flushing":
                    self.flush(record.task)
                elif record.domain_state == "unflushing":
                    self.ready(record.task)
            except Exception:
                log.exception("flush/ready failed")

    def timeout(self, spec: VmSpec | None) -> float:
        """How long one VM's move may take: a live migration to its deadline, then a shutdown migration."""
        migrating = migration.timeout_s(spec, self.d.cfg) if spec else self.d.cfg.migration.timeout
        return migrating + self.d.cfg.timers.vm_shutdown_timeout + 60.0

    def _ended(self, task: str | None) -> bool:
        """Whether the request's task has ended (a flush that failed is not run again until a new request)."""
        if task is None:
            return False
        try:
            return self.d.state.task(task).state in ("succeeded", "failed")
        except NotFound:
            return True

    def _domain_state(self) -> str:
        return self.d.state.node(self.me).domain_state

    def _progress(self, task: str | None, **fields: object) -> None:
        if task:
            with contextlib.suppress(NotFound):
                self.d.state.update_task(task, **fields)

    def flush(self, task: str | None) -> None:
        vms = [v for v in self.d.state.vms() if v.node == self.me and v.state in RUNNING_STATES]
        log.info("flushing %d VM(s)", len(vms))
        self._progress(task, state="running", total=len(vms), progress=0, message="flushing")
        stayed: list[str] = []
        for i, spec in enumerate(vms, 1):
            if self._domain_state() != "flushing":
                log.info("flush interrupted")
                self._progress(task, state="failed", message="interrupted by a new request")
                return
            self._progress(task, message=f"moving {spec.name}")
            self.d.progress.beat("flush", allow=self.timeout(spec))
            if not self._move_away(spec):
                stayed.append(spec.name)
            self._progress(task, progress=i)
        if stayed:
            message = (
                f"{len(vms) - len(stayed)} of {len(vms)} VM(s) moved; still on {self.me}: {', '.join(stayed)} "
                f"(the node stays flushing: flush again, or make it ready)"
            )
            log.error("flush: %s", message)
            self._progress(task, state="failed", message=message)
            return
        self.d.state.update_node(
            self.me,
            lambda r: r.model_copy(update={"domain_state": "flushed"}) if r.domain_state == "flushing" else None,
        )
        self._progress(task, state="succeeded", message=f"flushed {len(vms)} VM(s)")

    def _move_away(self, spec: VmSpec) -> bool:
        """Move one VM off this node (or park it); returns whether it left."""
        try:
            target = placement.choose(spec, self.d.candidates(), self.d.cfg.migration.selector, exclude={self.me})
        except placement.NoTarget as exc:
            log.warning("VM %s: %s; shutting it down, it starts again when this node is ready", spec.name, exc)

            def park(s: VmSpec) -> VmSpec | None:
                if s.node != self.me or s.state not in RUNNING_STATES:
                    return None
                return s.with_autostart(True).model_copy(update={"state": "shutdown"})

            self.d.state.update_vm(spec.uuid, park)
            return self._wait(spec, lambda s, st: True if s.state == "stop" else None)

        def away(s: VmSpec) -> VmSpec | None:
            if s.node != self.me or s.state not in RUNNING_STATES:
                return None
            return s.model_copy(update={"node": target, "last_node": s.last_node or self.me, "state": "migrate"})

        self.d.state.update_vm(spec.uuid, away)

        def moved(s: VmSpec, st: VmStatus) -> bool | None:
            if s.node == target and s.state == "start" and st.node == target:
                return True
            if s.node == self.me and s.state != "migrate":  # the migration failed and the VM stayed
                return False
            return None

        return self._wait(spec, moved)

    def ready(self, task: str | None) -> None:
        returning = [v for v in self.d.state.vms() if v.last_node == self.me and v.node != self.me]
        autostart = [v for v in self.d.state.vms() if v.node == self.me and v.placement.autostart and v.state == "stop"]
        total = len(returning) + len(autostart)
        self._progress(task, state="running", total=total, progress=0, message="returning VMs")
        done = 0
        for spec in returning:
            if self._domain_state() != "unflushing":
                self._progress(task, state="failed", message="interrupted by a new request")
                return

            def back(s: VmSpec) -> VmSpec | None:
                if s.last_node != self.me:
                    return None
                new_state = "migrate" if s.state == "start" else s.state
                return s.model_copy(update={"node": self.me, "last_node": None, "state": new_state})

            self._progress(task, message=f"returning {spec.name}")
            self.d.state.update_vm(spec.uuid, back)
            self._wait(spec, lambda s, st: True if s.state != "migrate" and s.node == self.me else None)
            done += 1
            self._progress(task, progress=done)
        for spec in autostart:
            self.d.state.update_vm(
                spec.uuid,
                lambda s: (
                    s.with_autostart(False).model_copy(update={"state": "start"})
                    if s.state == "stop" and s.node == self.me
                    else None
                ),
            )
            done += 1
            self._progress(task, progress=done)
        self.d.state.update_node(
            self.me,
            lambda r: r.model_copy(update={"domain_state": "ready"}) if r.domain_state == "unflushing" else None,
        )
        self._progress(task, state="succeeded", message=f"returned {len(returning)}, started {len(autostart)} VM(s)")

    def _wait(self, spec: VmSpec, moved: Moved) -> bool:
        """Wait for a VM's move; returns whether it is done (True also for a VM removed meanwhile)."""
        timeout = self.timeout(spec)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not self.d.stopping.is_set():
            try:
                current = self.d.state.vm(spec.uuid)
            except NotFound:
                return True
            outcome = moved(current, self.d.state.vm_status(spec.uuid))
            if outcome is not None:
                return outcome
            time.sleep(0.2)
        log.warning("VM %s did not finish moving within %.0fs", spec.name, timeout)
        return False
