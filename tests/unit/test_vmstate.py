"""The VM state machine table."""

from __future__ import annotations

import pytest

from pvc.nodeos.state.store import bounded
from pvc.nodeos.state.vmstate import STATES, TRANSITIONS, TransitionError, next_state


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


def test_table_covers_every_state():
    for allowed, target in TRANSITIONS.values():
        assert allowed <= set(STATES) and (target is None or target in STATES)


def test_bounded_keeps_the_tail():
    assert bounded([str(i) for i in range(10)], max_lines=3) == ["7", "8", "9"]
    assert bounded(["a" * 10, "b" * 10], max_bytes=15) == ["b" * 10]
