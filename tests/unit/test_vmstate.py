"""The VM state machine table."""

from __future__ import annotations

import pytest

from pvc.nodeos.state.store import bounded
from pvc.nodeos.state.vmstate import (
    HANDOFFS,
    OUTCOMES,
    RUNNING_STATES,
    STATES,
    STOPPED_STATES,
    TRANSITIONS,
    TransitionError,
    next_state,
    settled,
)


@pytest.mark.parametrize(
    "current,action,expected",
    [
        ("stop", "start", "start"),
        ("start", "restart", "restart"),
        ("start", "shutdown", "shutdown"),
        ("start", "stop", "stop"),
        ("fail", "disable", "disable"),
        ("start", "migrate", "migrate"),
        ("stop", "migrate", "stop"),
        ("disable", "move", "disable"),
        ("start", "unmigrate", "migrate"),
    ],
)
def test_allowed(current, action, expected):
    assert next_state(current, action) == expected


@pytest.mark.parametrize(
    "current,action",
    [
        ("start", "start"),
        ("stop", "shutdown"),
        ("stop", "restart"),
        ("start", "remove"),
        ("start", "disable"),
        ("migrate", "migrate"),
        ("restart", "remove"),
    ],
)
def test_refused_with_the_allowed_states(current, action):
    with pytest.raises(TransitionError, match=f"cannot {action} a VM in state '{current}'.*allowed from"):
        next_state(current, action)


@pytest.mark.parametrize(
    "action,desired,observed,failed_since,expected",
    [
        ("start", "start", "running", False, True),
        ("start", "start", "starting", False, False),
        ("start", "start", "failed", True, True),  # a new failure ends the wait (the CLI reports it)
        ("start", "start", "failed", False, False),  # a failure from before the action does not
        ("restart", "restart", "running", False, False),  # its node has not handed `restart` back yet
        ("restart", "start", "running", False, True),
        ("shutdown", "shutdown", "stopped", False, False),
        ("shutdown", "stop", "stopped", False, True),
        ("stop", "stop", "stopping", False, False),
        ("disable", "disable", "stopped", False, True),
    ],
)
def test_settled(action, desired, observed, failed_since, expected):
    assert settled(action, desired, observed, failed_since) is expected


def test_every_state_action_has_an_outcome():
    assert set(OUTCOMES) == {a for a, (_, target) in TRANSITIONS.items() if target is not None}


def test_table_covers_every_state():
    for allowed, target in TRANSITIONS.values():
        assert allowed <= set(STATES) and (target is None or target in STATES)


def test_bounded_keeps_the_tail():
    assert bounded([str(i) for i in range(10)], max_lines=3) == ["7", "8", "9"]
    assert bounded(["a" * 10, "b" * 10], max_bytes=15) == ["b" * 10]


def test_every_transient_state_is_handed_on_by_the_daemon():
    transient = {target for _, target in TRANSITIONS.values() if target not in (None, "start", "stop", "disable")}
    transient.add("migrate")  # written by migrate/move/unmigrate through next_state
    assert transient == {"restart", "shutdown", "migrate"}
    assert {expected for expected, _ in HANDOFFS.values()} >= transient
    for expected, new in HANDOFFS.values():
        assert expected in STATES and new in STATES and expected != new


def test_running_and_stopped_states_are_apart():
    assert not RUNNING_STATES & STOPPED_STATES
    assert set(STATES) - RUNNING_STATES - STOPPED_STATES == {"shutdown"}


def test_a_hand_off_applies_only_to_the_state_it_expects():
    from pvc.nodeos.state.vmstate import handed_off

    assert handed_off("restarted", "restart") == "start"
    assert handed_off("start_failed", "start") == "fail"
    assert handed_off("migrated", "stop") is None  # someone stopped it meanwhile: theirs stands
