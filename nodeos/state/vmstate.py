"""The VM state machine, whole: what the API may ask (TRANSITIONS) and what the node daemons write back (HANDOFFS).

A VM's desired `state` is written by the API; node daemons converge to it and hand transient states on once they
have acted (HANDOFFS). The API refuses an action whose current state is not in its row (HTTP 409); the daemon acts
on every state. `settled()` says when a state action has taken effect (`pvc vm start --wait` polls it).
"""

from __future__ import annotations

from typing import Literal

State = Literal["start", "restart", "shutdown", "stop", "disable", "migrate", "fail"]
Action = Literal["start", "restart", "shutdown", "stop", "disable", "migrate", "move", "unmigrate", "remove"]

STATES: tuple[State, ...] = ("start", "restart", "shutdown", "stop", "disable", "migrate", "fail")
# States in which a VM should be running (or is being brought to running) on its node.
RUNNING_STATES: frozenset[State] = frozenset({"start", "restart", "migrate"})
# States in which a VM must not run anywhere (`shutdown` is on its way there).
STOPPED_STATES: frozenset[State] = frozenset({"stop", "disable", "fail"})

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


# What the node daemon writes once it has done its part: event -> (the state it expects, the state it writes). A
# hand-off is a compare-and-set: if someone changed the state meanwhile, theirs stands.
HandOff = Literal["restarted", "shut_down", "migrated", "start_failed"]
HANDOFFS: dict[HandOff, tuple[State, State]] = {
    "restarted": ("restart", "start"),  # the home node shut the VM down; it starts again as `start`
    "shut_down": ("shutdown", "stop"),  # the home node shut the VM down
    "migrated": ("migrate", "start"),  # the VM runs on its new home (or was shut down to start there)
    "start_failed": ("start", "fail"),  # the home node could not start it: no retry until someone acts
}


def handed_off(event: HandOff, current: State) -> State | None:
    """The state the daemon writes for `event`, or None if the VM is no longer in the state the hand-off expects."""
    expected, new = HANDOFFS[event]
    return new if current == expected else None


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
# Desired states a state action leaves for the node to hand back when it is done (restart → start, shutdown → stop).
HANDED_BACK: frozenset[State] = frozenset(HANDOFFS[event][0] for event in ("restarted", "shut_down"))


def settled(action: Action, desired: State, observed: str, failed_since: bool) -> bool:
    """Has a VM settled after the state action `action`? Its node has handed back a transient desired state, and
    the VM is what the action asks for (running, or stopped), or it failed after the action was asked
    (`failed_since`: a failure left over from before does not count). `observed` is the VM's observed state."""
    if desired in HANDED_BACK:
        return False
    return observed == OUTCOMES[action] or (observed == "failed" and failed_since)
