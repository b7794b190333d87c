"""pvcd: act on this node's OSD requests (`pvc storage osd add NODE --path ...`) with formation's own OSD code,
reporting to the request's task. Formatting a disk is the node's own job: the API only records the request.

Only on an image node (the OSD runs from a systemd unit, like every OSD formation makes).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pydantic import ValidationError

from pvc.config.schema import OsdDisk
from pvc.config.secrets import cluster_secrets, read_join_key
from pvc.nodeos.daemon.watchdog import controller_thread
from pvc.nodeos.state.models import OsdRequest

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)


class OsdRequests:
    def __init__(self, daemon: Daemon) -> None:
        self.d = daemon
        self.thread = controller_thread("osd-requests", self._loop)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.d.stopping.wait(self.d.cfg.timers.keepalive_interval):
            self.d.progress.beat("osd-requests", allow=1800)  # preparing an OSD takes minutes
            try:
                self.run_once()
            except Exception as exc:
                log.warning("OSD requests: %s", exc)

    def pending(self) -> list[OsdRequest]:
        return [r for r in self.d.state.osd_requests() if r.node == self.d.node.name and r.state == "pending"]

    def run_once(self) -> None:
        for request in self.pending():
            self.handle(request)

    def _finish(self, request: OsdRequest, ok: bool, message: str) -> None:
        state = self.d.state
        state.put_osd_request(request.model_copy(update={"state": "done" if ok else "failed", "message": message}))
        state.update_task(request.task, state="succeeded" if ok else "failed", progress=1 if ok else 0, message=message)
        (log.info if ok else log.error)("OSD request %s: %s", request.id, message)

    def handle(self, request: OsdRequest) -> None:
        from pvc.nodeos.formation import ceph
        from pvc.nodeos.formation.machinery import Context, StepFailed

        self.d.state.update_task(request.task, state="running", message="finding the disks")
        try:
            selector = OsdDisk.model_validate(request.selector)
        except ValidationError as exc:
            self._finish(request, False, f"invalid selector {request.selector}: {exc.errors()[0]['msg']}")
            return
        join_key = read_join_key(self.d.cfg, self.d.base_dir)
        ctx = Context(
            cfg=self.d.cfg,
            node=self.d.node,
            # pvcd knows only the config's folder; the OSD code never reads config_path (the unit renderers do).
            config_path=self.d.base_dir,  # type: ignore[arg-type]
            join_key=join_key,
            secrets=cluster_secrets(join_key, [n.name for n in self.d.cfg.coordinators]),
            say=log.info,
        )
        try:
            devices = ceph.osd_disks(ctx, [selector])
            self.d.state.update_task(request.task, message=f"preparing {', '.join(devices)}")
            ids = ceph.ensure_osds(ctx, devices)
        except StepFailed as exc:
            self._finish(request, False, f"{exc} {exc.log.strip()[-300:]}".strip())
            return
        self._finish(request, True, f"osd.{', osd.'.join(map(str, ids))} up on {', '.join(devices)}")
