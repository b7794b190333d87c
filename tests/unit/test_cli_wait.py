"""`--wait` through the real `pvc` against a tiny API whose task (or VM) moves on with each poll: plain progress
lines without a terminal, a progress bar on one, the final message, and exit 1 when the task fails or time runs out.
"""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.harness.http_stub import Seen, Stub, serve

PVC = Path(sys.executable).parent / "pvc"


def task(state: str, progress: int, total: int, message: str, kind: str = "flush", target: str = "n1") -> dict:
    return {
        "id": "t1",
        "kind": kind,
        "target": target,
        "state": state,
        "progress": progress,
        "total": total,
        "message": message,
        "created": 1.0,
        "updated": 2.0,
    }


def script(*answers: dict):
    """A route answering each answer in turn, then the last one forever."""
    queue = list(answers)

    def answer(_: Seen) -> tuple[int, object]:
        return 200, queue.pop(0) if len(queue) > 1 else queue[0]

    return answer


FLUSH = [
    task("pending", 0, 0, ""),
    task("running", 0, 2, "moving web1"),
    task("running", 1, 2, "moving web2"),
    task("succeeded", 2, 2, "flushed 2 VM(s)"),
]


@pytest.fixture
def api(tmp_path):
    stub = Stub()
    server, url = serve(stub)
    env = {**os.environ, "PVC_CLIENT_DIR": str(tmp_path)}
    env.pop("PVC_CONNECTION", None)
    subprocess.run([str(PVC), "connection", "add", "stub", "--address", url, "--key", "k"], env=env, check=True)
    stub.env = env
    yield stub
    server.shutdown()
    server.server_close()


def pvc(api: Stub, *args: str) -> subprocess.CompletedProcess[str]:
    res = subprocess.run([str(PVC), *args], capture_output=True, text=True, env=api.env, timeout=60)
    assert "Traceback" not in res.stdout + res.stderr
    return res


def test_flush_wait_prints_progress_lines_and_the_final_message(api):
    api.routes[("POST", "/api/v1/nodes/n1/flush")] = (202, FLUSH[0])
    api.routes[("GET", "/api/v1/tasks/t1")] = script(*FLUSH[1:])
    res = pvc(api, "node", "flush", "n1", "--wait")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "flush n1: succeeded: flushed 2 VM(s)\n"
    assert res.stderr.splitlines() == [
        "flush n1: pending",
        "flush n1: running 0/2: moving web1",
        "flush n1: running 1/2: moving web2",
        "flush n1: succeeded 2/2: flushed 2 VM(s)",
    ]
    posts = [s for s in api.seen if s.method == "POST"]
    assert len(posts) == 1 and posts[0].body == b""


def test_without_wait_names_the_task(api):
    api.routes[("POST", "/api/v1/nodes/n1/ready")] = (202, task("pending", 0, 0, "", kind="ready"))
    res = pvc(api, "node", "ready", "n1")
    assert res.returncode == 0
    assert res.stdout == "ready n1: started task t1 (follow it with `pvc task show t1 --wait`)\n"


def test_failed_task_exits_1(api):
    api.routes[("POST", "/api/v1/vms/web1/migrate")] = (202, task("running", 0, 1, "to n2", "migrate", "web1"))
    api.routes[("GET", "/api/v1/tasks/t1")] = script(
        task("failed", 1, 1, "live migration to n2 failed (live-only VM): no route", "migrate", "web1")
    )
    res = pvc(api, "vm", "migrate", "web1", "--target", "n2", "--wait")
    assert res.returncode == 1 and res.stdout == ""
    assert res.stderr.splitlines()[-1] == (
        "pvc: task t1 (migrate web1) failed: live migration to n2 failed (live-only VM): no route"
    )


def test_wait_gives_up_after_the_timeout(api):
    api.routes[("GET", "/api/v1/tasks/t1")] = (200, task("running", 0, 3, "moving web1"))
    res = pvc(api, "task", "show", "t1", "--wait", "--timeout", "1")
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == (
        "pvc: gave up waiting after 1 s: task t1 (flush n1) is running, 0/3: moving web1; "
        "follow it with `pvc task show t1 --wait`"
    )


def test_task_show_wait_json_prints_the_final_document(api):
    api.routes[("GET", "/api/v1/tasks/t1")] = script(*FLUSH)
    res = pvc(api, "task", "show", "t1", "--wait", "--format", "json")
    assert res.returncode == 0
    assert '"state": "succeeded"' in res.stdout and "flush n1: succeeded" not in res.stdout


def test_progress_bar_on_a_terminal(api):
    api.routes[("POST", "/api/v1/nodes/n1/flush")] = (202, FLUSH[0])
    api.routes[("GET", "/api/v1/tasks/t1")] = script(*FLUSH[1:])
    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [str(PVC), "node", "flush", "n1", "--wait"],
        stdout=subprocess.PIPE,
        stderr=follower,
        env={**api.env, "COLUMNS": "100"},
    )
    os.close(follower)
    drawn = b""
    while True:
        ready, _, _ = select.select([leader], [], [], 30)
        if not ready:
            break
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed: pvc exited
            break
        if not chunk:
            break
        drawn += chunk
    out, _ = proc.communicate(timeout=30)
    os.close(leader)
    text = drawn.decode(errors="replace")
    assert proc.returncode == 0
    assert out == b"flush n1: succeeded: flushed 2 VM(s)\n"
    assert "flush n1  [" in text and "1/2" in text and "2/2" in text and "moving web2" in text
    assert "#" * 10 in text


def vm(state: str, running: str, on: str | None = None, reason: str = "") -> dict:
    return {
        "uuid": "u1",
        "name": "web1",
        "state": state,
        "node": "n1",
        "last_node": None,
        "running": running,
        "running_on": on,
        "memory_mib": 64,
        "vcpus": 1,
        "tags": [],
        "reason": reason,
    }


def test_vm_start_wait_follows_the_vm(api):
    api.routes[("POST", "/api/v1/vms/web1/state")] = (200, vm("start", "stopped"))
    api.routes[("GET", "/api/v1/vms/u1")] = script(vm("start", "starting"), vm("start", "running", "n1"))
    res = pvc(api, "vm", "start", "web1", "--wait")
    assert res.returncode == 0, res.stderr
    assert res.stdout == "start web1: running on n1\n"
    assert res.stderr.splitlines() == ["start web1: wants start, is stopped", "start web1: wants start, is starting"]


def test_vm_that_fails_to_start_exits_1(api):
    api.routes[("POST", "/api/v1/vms/web1/state")] = (200, vm("start", "stopped"))
    api.routes[("GET", "/api/v1/vms/u1")] = (200, vm("start", "failed", reason="libvirt: no memory"))
    res = pvc(api, "vm", "start", "web1", "--wait")
    assert res.returncode == 1
    assert res.stderr.splitlines()[-1] == "pvc: VM 'web1' failed on n1: libvirt: no memory"


def test_restart_waits_for_the_handback(api):
    api.routes[("POST", "/api/v1/vms/web1/state")] = (200, vm("restart", "running", "n1"))
    api.routes[("GET", "/api/v1/vms/u1")] = script(
        vm("restart", "stopping", "n1"), vm("restart", "starting"), vm("start", "running", "n1")
    )
    res = pvc(api, "vm", "restart", "web1", "--wait")
    assert res.returncode == 0 and res.stdout == "restart web1: running on n1\n"
    assert len([s for s in api.seen if s.method == "GET"]) == 3


def test_wait_rides_out_a_short_outage_of_the_api(api):
    outage = {"error": "cluster not ready", "detail": "lost the connection to ZooKeeper", "field": None}
    answers = [(503, outage), (503, outage), (200, FLUSH[3])]
    api.routes[("POST", "/api/v1/nodes/n1/flush")] = (202, FLUSH[0])
    api.routes[("GET", "/api/v1/tasks/t1")] = lambda _: answers.pop(0) if len(answers) > 1 else answers[0]
    res = pvc(api, "node", "flush", "n1", "--wait")
    assert res.returncode == 0 and res.stdout == "flush n1: succeeded: flushed 2 VM(s)\n"


def test_a_404_while_waiting_is_not_ridden_out(api):
    api.routes[("POST", "/api/v1/vms/web1/state")] = (200, vm("start", "stopped"))
    res = pvc(api, "vm", "start", "web1", "--wait")  # GET /vms/u1 has no route: 404
    assert res.returncode == 1 and res.stderr.splitlines()[-1] == "pvc: not found: no route /api/v1/vms/u1"


def test_ctrl_c_stops_only_the_waiting(api):
    api.routes[("GET", "/api/v1/tasks/t1")] = (200, task("running", 1, 3, "moving web2"))
    proc = subprocess.Popen(
        [str(PVC), "task", "show", "t1", "--wait"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=api.env,
    )
    deadline = time.monotonic() + 20
    while len([s for s in api.seen if s.method == "GET"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)  # polling has begun
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 130 and out == "" and "Traceback" not in err
    assert err.splitlines()[-1] == "pvc: stopped waiting; task t1 (flush n1) goes on: `pvc task show t1 --wait`"


def test_primary_wait_polls_the_node(api):
    view = {"name": "n2", "coordinator": True, "primary": False}
    api.routes[("POST", "/api/v1/nodes/n2/primary")] = (200, view)
    api.routes[("GET", "/api/v1/nodes/n2")] = script(view, {**view, "primary": True})
    res = pvc(api, "node", "primary", "n2", "--wait")
    assert res.returncode == 0 and res.stdout == "node n2 is the primary\n"
    assert [s.method for s in api.seen] == ["POST", "GET", "GET"]
    api.routes[("GET", "/api/v1/nodes/n2")] = (200, view)
    res = pvc(api, "node", "primary", "n2", "--wait", "--timeout", "1")
    assert res.returncode == 1
    assert res.stderr == "pvc: gave up waiting after 1 s: node n2 is not the primary yet\n"
