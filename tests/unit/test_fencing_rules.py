"""The fencer's rules as pure functions: who is late (after the term's grace), when quorum forbids a fence, the
retry backoff, and which fences and recoveries are due."""

from __future__ import annotations

from pvc.nodeos.daemon.fencing import Job, backoff_s, due, quorum_lost, suspects
from pvc.nodeos.state.models import FenceInfo, NodeRecord

LIMIT = 10_000  # dead after 10 s


def node(name: str, state: str = "run", fence: FenceInfo | None = None) -> NodeRecord:
    return NodeRecord(name=name, daemon_state=state, fence=fence)  # type: ignore[arg-type]


def test_a_late_keepalive_counts_only_after_a_full_window_of_the_term():
    records = [node("n1"), node("n2"), node("n3")]
    mtimes = {"n1": 100_000, "n2": 50_000, "n3": 99_000}
    # the term began at 95 s: n2's keepalive is 50 s old, but the window runs from 95 s
    assert suspects(records, mtimes, "n1", now_ms=100_000, term_ms=95_000, limit_ms=LIMIT) == {}
    assert suspects(records, mtimes, "n1", now_ms=105_001, term_ms=95_000, limit_ms=LIMIT) == {"n2": 55_001}
    # never itself, and only nodes that are up by their record
    records[1] = node("n2", "dead")
    assert suspects(records, {}, "n1", now_ms=10**9, term_ms=0, limit_ms=LIMIT) == {"n3": 10**9}


def test_quorum_is_lost_when_more_than_half_are_dead_or_fenced():
    three = [node("n1"), node("n2", "dead"), node("n3")]
    assert quorum_lost(three, 3) == []
    three[2] = node("n3", "fenced")
    assert quorum_lost(three, 3) == ["n2", "n3"]
    assert quorum_lost([node("n1"), node("n2", "dead")], 2) == []  # one of two: not more than half


def test_backoff_doubles_up_to_five_minutes():
    assert [backoff_s(a, 10) for a in (1, 2, 3, 4, 5, 6)] == [10, 20, 40, 80, 160, 300]
    assert backoff_s(20, 10) == 300


def test_due_fences_and_recoveries():
    failed_later = FenceInfo(state="failed", attempts=1, retry_at_ms=200)
    failed_now = FenceInfo(state="failed", attempts=2, retry_at_ms=100)
    records = [
        node("me"),
        node("new", "dead"),
        node("later", "dead", failed_later),
        node("now", "dead", failed_now),
        node("orphan", "dead", FenceInfo(state="fencing", by="old-primary")),
        node("busy", "dead"),
        node("halfway", "fenced", FenceInfo(state="off", recovered=False)),
        node("done", "fenced", FenceInfo(state="off", recovered=True)),
        node("back", "run", FenceInfo(state="off", recovered=True)),
    ]
    jobs = due(records, "me", now_ms=150, running={"busy"})
    assert jobs == [
        Job("halfway", "recover"),
        Job("new", "power-off"),
        Job("now", "power-off"),
        Job("orphan", "power-off"),
    ]
