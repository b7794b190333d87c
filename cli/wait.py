"""`--wait`: poll a task (or a VM, or a node) until the operation ends, showing progress.

On a terminal, standard error shows a progress bar from the task's progress and total; otherwise one plain line
per change. Standard output gets the final message. A failed task, or a wait that runs out of time, is a Failure.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import click

from pvc.cli.client import ApiError, Client, Unreachable, path
from pvc.cli.errors import Failure
from pvc.nodeos.state.vmstate import Action, settled

POLL_INTERVAL = 0.5
UNREACHABLE_GRACE = 20.0  # the API may move with the primary coordinator: keep trying this long
TASK_TIMEOUT = 600.0
VM_TIMEOUT = 300.0
DONE = ("succeeded", "failed")


def timeout_option(default: float) -> Callable:
    return click.option(
        "--timeout",
        type=click.FloatRange(min=1),
        default=default,
        show_default=True,
        metavar="SECONDS",
        help="With --wait: how long to wait before giving up (the operation goes on).",
    )


def wait_option(fn: Callable) -> Callable:
    return click.option("--wait", is_flag=True, help="Wait until the operation ends, showing its progress.")(fn)


class Interrupted(Failure):
    exit_code = 130


def poll(client: Client, route: str) -> Any:
    """GET `route`, riding out a short outage of the API (a primary failover moves its address, and the API
    answers 503 while it has no ZooKeeper session)."""
    give_up = time.monotonic() + UNREACHABLE_GRACE
    while True:
        try:
            return client.get(route)
        except ApiError as exc:
            if not (isinstance(exc, Unreachable) or exc.status == 503) or time.monotonic() > give_up:
                raise
            time.sleep(POLL_INTERVAL)


class Progress:
    """A progress bar on a terminal, plain lines otherwise; both on standard error."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.tty = sys.stderr.isatty()
        self.bar: Any = None
        self.last: tuple | None = None

    def show(self, state: str, progress: int, total: int, message: str) -> None:
        if self.tty:
            if self.bar is None:
                self.bar = click.progressbar(
                    length=total,
                    label=self.label,
                    file=sys.stderr,
                    show_pos=True,
                    show_eta=False,
                    show_percent=False,
                    item_show_func=lambda m: m,
                )
                self.bar.__enter__()
            self.bar.length = total
            self.bar.pos = min(progress, total) if total else progress
            self.bar.current_item = message
            self.bar.finished = state == "succeeded"  # a full bar, even for a task with nothing to do
            self.bar.render_progress()
            return
        now = (state, progress, total, message)
        if now != self.last:
            self.last = now
            counter = f" {progress}/{total}" if total else ""
            click.echo(f"{self.label}: {state}{counter}{': ' + message if message else ''}", err=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.render_finish()
            self.bar = None


def label(task: dict) -> str:
    return f"{task.get('kind', 'task')} {task.get('target', '')}".strip()


def follow_task(client: Client, task: dict, timeout: float = TASK_TIMEOUT) -> dict:
    """Wait for `task` to end, showing its progress, and return it. Failure if `timeout` passed first."""
    progress = Progress(label(task))
    deadline = time.monotonic() + timeout
    try:
        progress.show(task["state"], task.get("progress", 0), task.get("total", 0), task.get("message", ""))
        while task["state"] not in DONE:
            if time.monotonic() > deadline:
                raise Failure(
                    f"gave up waiting after {timeout:g} s: task {task['id']} ({label(task)}) is {task['state']}, "
                    f"{task.get('progress', 0)}/{task.get('total', 0)}: {task.get('message') or '-'}; "
                    f"follow it with `pvc task show {task['id']} --wait`"
                )
            time.sleep(POLL_INTERVAL)
            task = poll(client, path("tasks", task["id"]))
            progress.show(task["state"], task.get("progress", 0), task.get("total", 0), task.get("message", ""))
    except KeyboardInterrupt:
        raise Interrupted(
            f"stopped waiting; task {task['id']} ({label(task)}) goes on: `pvc task show {task['id']} --wait`"
        ) from None
    finally:
        progress.close()
    return task


def conclude(task: dict) -> None:
    """The last word on an ended task: its message on standard output, or a Failure if it failed."""
    if task["state"] == "failed":
        raise Failure(f"task {task['id']} ({label(task)}) failed: {task.get('message') or 'no reason given'}")
    click.echo(f"{label(task)}: {task['state']}: {task.get('message') or 'done'}")


def follow_vm(client: Client, vm: dict, action: Action, timeout: float = VM_TIMEOUT) -> dict:
    """Wait until a VM has settled after `action` (vmstate.settled): running or stopped as asked, or failed."""
    before = (vm["running"], vm.get("reason", ""))
    deadline = time.monotonic() + timeout
    last = None
    try:
        while True:
            failed_since = (vm["running"], vm.get("reason", "")) != before
            if settled(action, vm["state"], vm["running"], failed_since):
                if vm["running"] == "failed":
                    raise Failure(f"VM '{vm['name']}' failed on {vm['node']}: {vm.get('reason') or 'no reason given'}")
                break
            now = (vm["state"], vm["running"], vm.get("running_on"))
            if now != last:
                last = now
                where = f" on {vm['running_on']}" if vm.get("running_on") else ""
                click.echo(f"{action} {vm['name']}: wants {vm['state']}, is {vm['running']}{where}", err=True)
            if time.monotonic() > deadline:
                raise Failure(
                    f"gave up waiting after {timeout:g} s: VM '{vm['name']}' wants {vm['state']} on {vm['node']} "
                    f"but is {vm['running']}{': ' + vm['reason'] if vm.get('reason') else ''}"
                )
            time.sleep(POLL_INTERVAL)
            vm = poll(client, path("vms", vm["uuid"]))
    except KeyboardInterrupt:
        raise Interrupted(f"stopped waiting; VM '{vm['name']}' goes on towards {vm['state']}") from None
    where = f" on {vm['running_on']}" if vm.get("running_on") else ""
    click.echo(f"{action} {vm['name']}: {vm['running']}{where}")
    return vm


def follow_primary(client: Client, node: str, timeout: float) -> dict:
    deadline = time.monotonic() + timeout
    try:
        while True:
            view = poll(client, path("nodes", node))
            if view["primary"]:
                return view
            if time.monotonic() > deadline:
                raise Failure(f"gave up waiting after {timeout:g} s: node {node} is not the primary yet")
            time.sleep(POLL_INTERVAL)
    except KeyboardInterrupt:
        raise Interrupted(f"stopped waiting; node {node} was asked to become the primary") from None
