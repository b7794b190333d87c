"""ZooKeeper's clock, read without writing.

Liveness is measured on ZooKeeper's clock: a keepalive's age is "ZooKeeper's now" minus the mtime ZooKeeper gave it
(never a node's own clock, which may be off). ZooKeeper has no "what time is it" request, and learning the time from
the mtime of a write of one's own would make every reader a writer. Every node writes its keepalive each interval,
though, and a watch on it fires the moment the write commits: the mtime of that write, paired with this process's
monotonic clock when the event arrives, gives ZooKeeper's time from then on, by adding the monotonic time since.
Each new keepalive event refreshes the pair (following a leader change or a stepped clock); the estimate lags
ZooKeeper by the event's delivery time (milliseconds), so ages read slightly young, never too old.

Before the first keepalive event after start (a cluster whose every pvcd is down), the clock does not know the time:
`now_ms()` is None, and readers say "unknown" rather than guess.
"""

from __future__ import annotations

import threading
import time

from kazoo.client import KazooClient
from kazoo.protocol.states import WatchedEvent, ZnodeStat

from pvc.nodeos.state import layout


class ZkClock:
    def __init__(self, zk: KazooClient) -> None:
        self.zk = zk
        self._pair: tuple[int, float] | None = None  # (mtime ms, time.monotonic() when its event arrived)
        self._watched: set[str] = set()
        self._lock = threading.Lock()
        self._known = threading.Event()

    def start(self) -> None:
        """Watch every node's keepalive."""
        self.zk.ChildrenWatch(layout.NODES, self._nodes)

    def wait_known(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for the first keepalive event; True once the clock knows the time."""
        return self._known.wait(timeout)

    def now_ms(self) -> int | None:
        """ZooKeeper's time now (ms since the epoch), or None before the first keepalive event."""
        pair = self._pair
        if pair is None:
            return None
        mtime, at = pair
        return int(mtime + (time.monotonic() - at) * 1000)

    def _nodes(self, names: list[str]) -> None:
        with self._lock:
            new = [n for n in names if n not in self._watched]
            self._watched.update(new)
        for name in new:
            self.zk.DataWatch(layout.node_keepalive(name), self._keepalive)

    def _keepalive(self, data: bytes | None, stat: ZnodeStat | None, event: WatchedEvent | None = None) -> None:
        # The first call (event None) reports a write of unknown age, as does the re-read after a reconnect: only a
        # change event says "written just now".
        if event is None or stat is None:
            return
        self._pair = (stat.mtime, time.monotonic())
        self._known.set()
