"""The VM state machine, declared as one table.

A VM's desired `state` is written by the API; node daemons converge to it and hand transient states back:
`restart` → `start`, `shutdown` → `stop`, `migrate` → `start` (on the target). The API refuses an action whose
current state is not in its row (HTTP 409); the daemon acts on every state. `settled()` says when a state action
has taken effect (`pvc vm start --wait` polls it).
"""

from __future__ import annotations

from typing import Literal

State = Literal["start", "restart", "shutdown", "stop", "disable", "migrate", "fail"]
Action = Literal["start", "restart", "shutdown", "stop", "disable", "migrate", "move", "unmigrate", "remove"]

STATES: tuple[State, ...] = ("start", "restart", "shutdown", "stop", "disable", "migrate", "fail")
# States in which a VM should be running (or is being brought to running) on its node.
RUNNING_STATES: frozenset[State] = frozenset({"start", "restart", "migrate"})

# action -> (states it is allowed from, state it writes; None = keeps the current state)
TRANSITIONS: dict[Action, tuple[frozenset[State], State | None]] = {
    "start": (frozenset({"stop", "disable", "fail"}), "start"),
    "restart": (frozenset({"start"}), "restart"),
    "shutdown": (frozenset({"start", "restart"}), "shutdown"),
    "stop": (frozenset({"start", "restart", "shutdown", "migrate", "fail"}), "stop"),
    "disable": (frozenset({"stop", "fail"}), "disable"),
    # migrate/move/unmigrate: a running VM goes through `migrate`; a stopped one only changes node.
    "migrate": (frozenset({"start", "stop", "disable", "fail"}), None),
    "move": (frozenset({"start", "stop", "disable", "fail"}), None),
    "unmigrate": (frozenset({"start", "stop", "disable", "fail"}), None),
    "remove": (frozenset({"stop", "disable", "fail"}), None),
}


class TransitionError(Exception):
    """An action that the VM's current state does not allow (the API answers 409)."""


def next_state(current: State, action: Action) -> State:
    allowed, target = TRANSITIONS[action]
    if current not in allowed:
        accepted = ", ".join(sorted(allowed))
        raise TransitionError(f"cannot {action} a VM in state '{current}' (allowed from: {accepted})")
    if action in ("migrate", "move", "unmigrate"):
        return "migrate" if current == "start" else current
    return target if target is not None else current


# What a state action leaves the VM as, once its node has acted on it.
OUTCOMES: dict[Action, Literal["running", "stopped"]] = {
    "start": "running",
    "restart": "running",
    "shutdown": "stopped",
    "stop": "stopped",
    "disable": "stopped",
}
# Desired states a node hands back when it is done with them (restart → start, shutdown → stop).
HANDED_BACK: frozenset[State] = frozenset({"restart", "shutdown"})


def settled(action: Action, desired: State, observed: str, failed_since: bool) -> bool:
    """Has a VM settled after the state action `action`? Its node has handed back a transient desired state, and
    the VM is what the action asks for (running, or stopped), or it failed after the action was asked
    (`failed_since`: a failure left over from before does not count). `observed` is the VM's observed state."""
    if desired in HANDED_BACK:
        return False
    return observed == OUTCOMES[action] or (observed == "failed" and failed_since)
