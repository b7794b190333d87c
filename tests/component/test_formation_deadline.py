"""A formation step stuck in a call Python cannot interrupt: the libvirt step's secret definition against a libvirtd
that accepts the connection and never answers (what a wedged libvirtd looks like to its clients). The real libvirt
client library blocks in C; the step's deadline (machinery.run_step) fails the step naming the call."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from pvc.nodeos.formation import libvirt as libvirt_step
from pvc.nodeos.formation import machinery
from pvc.nodeos.formation.machinery import StepFailed, run_step

JOIN_KEY = "d030b4085b355457d02261a930f6a672131203c3d0bc56e3909367e2b22d29df"


@pytest.fixture
def silent_libvirtd(tmp_path):
    """A Unix socket that accepts connections and never says a word."""
    path = tmp_path / "libvirt-sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(8)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except TimeoutError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield path
    stop.set()
    thread.join()
    for conn in held:
        conn.close()
    server.close()


def test_a_wedged_libvirtd_fails_the_step_at_its_deadline_naming_the_call(silent_libvirtd, monkeypatch):
    monkeypatch.setattr(machinery, "GRACE", 0.5)
    uri = f"qemu:///system?socket={silent_libvirtd}"
    started = time.monotonic()
    with pytest.raises(StepFailed) as info:
        run_step("libvirt", 3.0, lambda: libvirt_step.define_ceph_secret(JOIN_KEY, uri))
    assert time.monotonic() - started < 10
    message = str(info.value)
    assert "did not finish within its deadline of 3 s" in message
    assert f"stuck in defining the client.libvirt secret through libvirt ({uri})" in message
