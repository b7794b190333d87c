"""Serial console capture: QEMU appends each VM's serial output to a log file (the <log> vmrender puts on its serial port); this
thread moves new lines into the VM's bounded console ring in ZooKeeper and keeps the file small."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pvc.nodeos.daemon.service import Daemon

log = logging.getLogger(__name__)
MAX_FILE_BYTES = 1024 * 1024


class ConsoleTailer:
    def __init__(self, daemon: Daemon, directory: Path, interval: float = 0.5) -> None:
        self.d = daemon
        self.dir = directory
        self.interval = interval
        self.offsets: dict[str, int] = {}
        self.partial: dict[str, str] = {}
        self.thread = threading.Thread(target=self._loop, name="console", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _loop(self) -> None:
        while not self.d.stopping.wait(self.interval):
            try:
                for vm_uuid in self.d.virt.running():
                    self.collect(vm_uuid)
            except Exception as exc:
                log.debug("console pass failed: %s", exc)

    def collect(self, vm_uuid: str) -> None:
        path = self.dir / f"{vm_uuid}.log"
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return
        offset = self.offsets.get(vm_uuid, 0)
        if size < offset:  # truncated or recreated (a new start)
            offset = 0
        if size == offset:
            return
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read(size - offset)
        text = self.partial.pop(vm_uuid, "") + data.decode(errors="replace").replace("\r", "")
        lines = text.split("\n")
        if lines[-1]:
            self.partial[vm_uuid] = lines[-1][-4096:]
        self.d.state.append_console(vm_uuid, [line for line in lines[:-1]])
        if size > MAX_FILE_BYTES:
            # QEMU opened the file with O_APPEND: after truncation it keeps writing at the (new) end.
            os.truncate(path, 0)
            size = 0
        self.offsets[vm_uuid] = size
