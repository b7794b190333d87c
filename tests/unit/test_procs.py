"""The harness's signal handling (tests/harness/procs.py): SIGTERM interrupts the test process so its cleanup runs,
but a child forked from it without exec just exits, never running the parent's cleanup in its place."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from tests.harness.procs import end_on_signals


def test_sigterm_interrupts_this_process():
    end_on_signals()
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)  # the handler runs at the next bytecode; never reached


def test_a_forked_child_exits_without_running_the_parents_cleanup(tmp_path: Path):
    end_on_signals()
    cleaned = tmp_path / "cleaned"
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: what pyroute2's NetNS helper is, a fork running inside the parent's stack
        try:
            os.write(ready_w, b"x")
            time.sleep(30)
        finally:
            cleaned.write_text("the parent's finally ran in the child")
        os._exit(0)
    os.read(ready_r, 1)
    os.kill(pid, signal.SIGTERM)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 128 + signal.SIGTERM
    assert not cleaned.exists()
