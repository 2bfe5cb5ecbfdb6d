"""The commit point: first unfinished offset per partition; stale acknowledgements ignored."""

from __future__ import annotations

import threading

from worker.stream.offsets import OffsetTracker
from worker.stream.types import Ticket


def reg(tracker: OffsetTracker, tp: tuple[str, int], offset: int) -> Ticket:
    ticket = tracker.register(tp, offset)
    assert ticket is not None
    return ticket


TP = ("t", 0)


def test_commit_point_is_first_unfinished() -> None:
    tr = OffsetTracker()
    tr.assign(TP)
    tickets = [reg(tr, TP, off) for off in (10, 11, 12, 15)]  # gaps are fine
    assert tr.commit_points() == {}
    tr.acknowledge(tickets[1])
    assert tr.commit_points() == {}
    tr.acknowledge(tickets[0])
    assert tr.commit_points() == {TP: 12}
    tr.acknowledge(tickets[3])
    assert tr.commit_points() == {TP: 12}
    tr.acknowledge(tickets[2])
    assert tr.commit_points() == {TP: 16}
    assert tr.unfinished() == 0


def test_revoked_partition_ignores_late_acks() -> None:
    tr = OffsetTracker()
    tr.assign(TP)
    old = reg(tr, TP, 0)
    assert tr.forget(TP) == 1
    tr.assign(TP)
    assert not tr.is_current(old)
    assert tr.acknowledge(old) is False
    assert tr.commit_points() == {}
    new = reg(tr, TP, 0)
    assert tr.acknowledge(new) and tr.commit_points() == {TP: 1}


def test_wait_drained_wakes_on_completion() -> None:
    tr = OffsetTracker()
    tr.assign(TP)
    t = reg(tr, TP, 0)
    timer = threading.Timer(0.1, tr.acknowledge, args=(t,))
    timer.start()
    assert tr.wait_drained([TP], timeout=5)
    assert not tr.wait_drained(None, timeout=0) or tr.unfinished() == 0


def test_duplicate_ack_counts_once() -> None:
    tr = OffsetTracker()
    tr.assign(TP)
    t = reg(tr, TP, 5)
    reg(tr, TP, 6)
    assert tr.acknowledge(t)
    assert tr.acknowledge(t) is False  # already popped from the done prefix
    assert tr.unfinished() == 1


def test_redelivered_offsets_are_refused() -> None:
    """A consumer that rewinds (pause/resume, a fetch-position reset) hands back offsets it already
    gave: they must not be counted again, or the in-flight count never drains."""
    tr = OffsetTracker()
    tr.assign(TP)
    first = [reg(tr, TP, off) for off in (0, 1, 2)]
    assert tr.acknowledge(first[0])
    assert tr.register(TP, 0) is None  # done and committed-to already
    assert tr.register(TP, 1) is None  # still in flight
    assert tr.unfinished() == 2
    later = reg(tr, TP, 3)
    for t in (*first[1:], later):
        assert tr.acknowledge(t)
    assert tr.unfinished() == 0 and tr.commit_points() == {TP: 4}
    tr.forget(TP)
    tr.assign(TP)
    assert tr.register(TP, 0) is not None  # a new assignment starts over
