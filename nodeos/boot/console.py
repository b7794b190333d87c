"""What a booting node says on its console, in one place: `pvc-node` and the formation graph print these lines,
and the lab and the system tests read them (a VM's console is the only window into its formation).

    pvc-node: looking for cluster.toml (...)
    pvc-node: PVC-CONFIG-WAITING: <what is wrong>
    pvc-node: [3/15] network: starting
    pvc-node: [3/15] network: done in 1.2 s: <message>
    pvc-node: [4/15] zookeeper: FAILED: <why>
    pvc-node: PVC-FORMATION-FAILED node=node1 step=zookeeper
    pvc-node: PVC-FORMATION-DONE node=node1 steps=15
"""

from __future__ import annotations

import re
from typing import Literal

PREFIX = "pvc-node:"
SEARCHING = "looking for cluster.toml"
WAITING_MARKER = "PVC-CONFIG-WAITING"
DONE_MARKER = "PVC-FORMATION-DONE"
FAILED_MARKER = "PVC-FORMATION-FAILED"

StepState = Literal["running", "done", "failed"]
# the word a step line ends its tag with -> the step's state in formation progress
STEP_EVENTS: dict[str, StepState] = {"starting": "running", "done": "done", "FAILED": "failed"}
STEP_RE = re.compile(rf"{re.escape(PREFIX)} \[(\d+)/(\d+)\] ([\w-]+): ({'|'.join(STEP_EVENTS)})")


def line(message: str) -> str:
    return f"{PREFIX} {message}"


def step_tag(index: int, total: int, name: str) -> str:
    """`[3/15] network` for the third of 15 steps (index counts from 1)."""
    return f"[{index}/{total}] {name}"


def step_starting(tag: str) -> str:
    return f"{tag}: starting"


def step_done(tag: str, seconds: float, message: str) -> str:
    return f"{tag}: done in {seconds:.1f} s: {message}"


def step_failed(tag: str, reason: str) -> str:
    return f"{tag}: FAILED: {reason}"


def waiting(reason: str) -> str:
    return f"{WAITING_MARKER}: {reason}"


def done(node: str, steps: int) -> str:
    return f"{DONE_MARKER} node={node} steps={steps}"


def failed(node: str, step: str) -> str:
    return f"{FAILED_MARKER} node={node} step={step}"


def steps_seen(text: str) -> dict[str, StepState]:
    """Each step's last state in a console text, in the order the steps first appeared."""
    steps: dict[str, StepState] = {}
    for m in STEP_RE.finditer(text):
        steps[m.group(3)] = STEP_EVENTS[m.group(4)]
    return steps


FAILED_STEP_RE = re.compile(rf"{re.escape(PREFIX)} \[\d+/\d+\] ([\w-]+): FAILED: (.*)")


def last_problem(text: str) -> str | None:
    """The line of the last formation failure (with the failed step's reason) or config wait, unless the node formed
    after it."""
    formed = text.rfind(DONE_MARKER)
    bad = max(text.rfind(FAILED_MARKER), text.rfind(WAITING_MARKER))
    if bad <= formed:
        return None
    problem = text[bad:].splitlines()[0]
    if problem.startswith(FAILED_MARKER):
        reasons = list(FAILED_STEP_RE.finditer(text, max(formed, 0), bad))
        if reasons:
            problem += f": {reasons[-1].group(2).strip()}"
    return problem
