"""pvcd's end of the lease hook: a unix socket only root can use (mode 0600 in a root-only directory), one JSON
message per connection from `pvc-lease-hook`, answered with the `init` lines or "ok" ("error: ..." on failure)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger(__name__)

Handler = Callable[[dict], str]


class LeaseServer:
    def __init__(self, path: Path, handle: Handler) -> None:
        self.path = path
        self.handle = handle
        self.sock: socket.socket | None = None
        self.thread = threading.Thread(target=self._serve, name="lease-hook", daemon=True)

    def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        os.chmod(self.path.parent, 0o700)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        sock.listen(16)
        self.sock = sock
        self.thread.start()

    def _serve(self) -> None:
        assert self.sock is not None
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._one, args=(conn,), daemon=True).start()

    def _one(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(10)
            try:
                data = b""
                while chunk := conn.recv(65536):
                    data += chunk
                reply = self.handle(json.loads(data))
            except Exception as exc:
                log.warning("lease hook message failed: %s", exc)
                reply = f"error: {exc}"
            with contextlib.suppress(OSError):
                conn.sendall(reply.encode())

    def stop(self) -> None:
        if self.sock is not None:
            with contextlib.suppress(OSError):
                self.sock.close()
            self.sock = None
