"""The primary's housekeeping: finished tasks and OSD requests do not pile up in ZooKeeper (cluster.toml
`[retention]`: the newest N finished tasks of each kind, and of OSD requests, are kept)."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from pvc.nodeos.daemon.watchdog import controller_thread

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)
EVERY = 60.0  # seconds between two passes


class Housekeeping:
    def __init__(self, daemon: Daemon, every: float = EVERY) -> None:
        self.d = daemon
        self.every = every
        self.thread = controller_thread("housekeeping", self._loop)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.d.stopping.wait(self.every):
            self.d.progress.beat("housekeeping", allow=self.every * 2)
            if self.d.election is None or not self.d.election.is_primary.is_set():
                continue
            try:
                self.run_once()
            except Exception as exc:
                log.warning("housekeeping: %s", exc)

    def run_once(self) -> None:
        keep = self.d.cfg.retention
        tasks = self.d.state.prune_tasks(keep.tasks_per_kind)
        requests = self.d.state.prune_osd_requests(keep.osd_requests)
        if tasks or requests:
            log.info("housekeeping: removed %d finished task(s) and %d OSD request(s)", tasks, requests)
