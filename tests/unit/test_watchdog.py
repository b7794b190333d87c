"""pvcd's watchdog: progress per controller, excused while ZooKeeper is away, and sd_notify over a real socket."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

from pvc.nodeos.daemon.keepalive import disk_used
from pvc.nodeos.daemon.watchdog import Progress, controller_thread, sd_notify


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_a_controller_is_stalled_once_its_step_takes_longer_than_allowed():
    clock = Clock()
    progress = Progress(10, clock)
    progress.beat("fencer")
    progress.beat("worker", allow=100)
    clock.now = 10.0
    assert progress.stalled() == {}
    clock.now = 10.5
    assert progress.stalled() == {"fencer": 10.5}
    assert progress.stalled(["worker"]) == {}
    clock.now = 101
    assert progress.stalled() == {"fencer": 101, "worker": 101}
    progress.forget("worker")
    progress.beat("fencer", allow=1)  # never less than the bound
    clock.now = 110
    assert progress.stalled() == {}


def test_no_stall_is_judged_while_excused():
    clock = Clock()
    progress = Progress(5, clock)
    progress.beat("election")
    progress.excuse(None)  # ZooKeeper's connection lost
    clock.now = 1000
    assert progress.stalled() == {}
    progress.excuse(5)  # back: every queued call gets its answer now
    clock.now = 1004
    assert progress.stalled() == {}
    clock.now = 1006
    assert progress.stalled() == {"election": 1006}


def test_sd_notify_sends_a_datagram(tmp_path):
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        assert sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": path})
        assert sock.recv(100) == b"WATCHDOG=1"
    assert not sd_notify("WATCHDOG=1", {})  # not under systemd
    assert not sd_notify("WATCHDOG=1", {"NOTIFY_SOCKET": str(tmp_path / "gone")})  # never raises


def test_controller_threads_carry_their_name_to_the_os():
    seen: list[str] = []

    def look() -> None:
        seen.append(Path(f"/proc/self/task/{threading.get_native_id()}/comm").read_text().strip())

    thread = controller_thread("fencer", look)
    thread.start()
    thread.join()
    assert seen == ["fencer"] and thread.name == "fencer"


def test_disk_used_reports_existing_file_systems(tmp_path):
    used = disk_used(("/", str(tmp_path / "missing")))
    assert list(used) == ["/"] and 0 <= used["/"] <= 100
    st = os.statvfs("/")
    assert abs(used["/"] - 100 * (st.f_blocks - st.f_bfree) / (st.f_blocks - st.f_bfree + st.f_bavail)) < 1
