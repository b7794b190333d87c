"""Serial console capture: QEMU appends each VM's serial output to a log file (the <log> vmrender puts on its serial port); this
thread moves new lines into the VM's bounded console ring in ZooKeeper and keeps the file small.

Bounded whatever a guest prints, and whether or not ZooKeeper answers: each pass reads at most READ_BYTES of a file
(a guest printing faster skips the middle, and a line says how much), the file is truncated once it passes
MAX_FILE_BYTES, lines wait in memory (at most a ring's worth) and go to ZooKeeper at most once every
WRITE_INTERVAL per VM, and only when there is something new.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from pvc.nodeos.daemon.watchdog import controller_thread
from pvc.nodeos.state.store import CONSOLE_BYTES, bounded

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)
MAX_FILE_BYTES = 1024 * 1024  # a console log file on PVCDATA is truncated beyond this
READ_BYTES = 64 * 1024  # read per VM per pass
WRITE_INTERVAL = 1.0  # seconds between two writes of one VM's console ring to ZooKeeper


class ConsoleTailer:
    def __init__(self, daemon: Daemon, directory: Path, interval: float = 0.5) -> None:
        self.d = daemon
        self.dir = directory
        self.interval = interval
        self.offsets: dict[str, int] = {}
        self.partial: dict[str, str] = {}
        self.pending: dict[str, list[str]] = {}  # lines read, not yet in ZooKeeper
        self.written: dict[str, float] = {}  # when each VM's ring was last written (monotonic)
        self.failed_at = 0.0
        self.thread = controller_thread("console", self._loop)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.d.stopping.wait(self.interval):
            self.d.progress.beat("console")
            # the keepalive's libvirt sample says what runs here: no libvirt call of our own
            for vm_uuid in self.d.keepalive.sample.running:
                try:
                    self.collect(vm_uuid)
                    self.publish(vm_uuid)
                except Exception as exc:
                    if time.monotonic() - self.failed_at > 60:  # say so, once a minute
                        log.warning("console of VM %s: %s", vm_uuid, exc)
                        self.failed_at = time.monotonic()
            for gone in set(self.pending) - set(self.d.keepalive.sample.running):
                self.pending.pop(gone, None)

    def collect(self, vm_uuid: str) -> None:
        """Read what the VM printed since the last pass (at most READ_BYTES), and truncate a large file."""
        path = self.dir / f"{vm_uuid}.log"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        offset = self.offsets.get(vm_uuid, 0)
        if size < offset:  # truncated or recreated (a new start)
            offset = 0
        skipped = max(0, size - offset - READ_BYTES)
        data = b""
        if size > offset:
            with open(path, "rb") as fh:
                fh.seek(offset + skipped)
                data = fh.read(size - offset - skipped)
        if size > MAX_FILE_BYTES:
            # QEMU opened the file with O_APPEND: after truncation it keeps writing at the (new) end.
            os.truncate(path, 0)
            size = 0
        self.offsets[vm_uuid] = size
        if not data:
            return
        text = data.decode(errors="replace").replace("\r", "")
        if skipped:
            self.partial.pop(vm_uuid, None)
            text = f"[... {skipped} bytes of console output skipped ...]\n" + text.partition("\n")[2]
        lines = (self.partial.pop(vm_uuid, "") + text).split("\n")
        if lines[-1]:
            self.partial[vm_uuid] = lines[-1][-4096:]
        self.pending[vm_uuid] = bounded([*self.pending.get(vm_uuid, []), *lines[:-1]], max_bytes=CONSOLE_BYTES)

    def publish(self, vm_uuid: str) -> None:
        """Write the VM's new lines to its ring in ZooKeeper, unless it was written less than WRITE_INTERVAL ago."""
        lines = self.pending.get(vm_uuid)
        if not lines or time.monotonic() - self.written.get(vm_uuid, 0.0) < WRITE_INTERVAL:
            return
        if not self.d.zk.connected:  # kept until ZooKeeper is back (bounded above)
            return
        self.written[vm_uuid] = time.monotonic()
        self.d.state.append_console(vm_uuid, lines)
        self.pending.pop(vm_uuid, None)
