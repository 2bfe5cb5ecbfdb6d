"""The commit point: first unfinished offset per partition; stale acknowledgements ignored."""

from __future__ import annotations

import threading

from worker.stream.offsets import OffsetTracker

TP = ("t", 0)


def test_commit_point_is_first_unfinished() -> None:
    tr = OffsetTracker()
    tr.assign(TP)
    tickets = [tr.register(TP, off) for off in (10, 11, 12, 15)]  # gaps are fine
    assert tr.commit_points() == {}
    tr.done(tickets[1])
    assert tr.commit_points() == {}
    tr.done(tickets[0])
    assert tr.commit_points() == {TP: 12}
    tr.done(tickets[3])
    assert tr.commit_points() == {TP: 12}
    tr.done(tickets[2])
    assert tr.commit_points() == {TP: 16}
    assert tr.unfinished() == 0


def test_revoked_partition_ignores_late_acks() -> None:
    tr = OffsetTracker()
    tr.assign(TP)
    old = tr.register(TP, 0)
    assert tr.forget(TP) == 1
    tr.assign(TP)
    assert not tr.is_current(old)
    assert tr.done(old) is False
    assert tr.commit_points() == {}
    new = tr.register(TP, 0)
    assert tr.done(new) and tr.commit_points() == {TP: 1}


def test_wait_drained_wakes_on_completion() -> None:
    tr = OffsetTracker()
    tr.assign(TP)
    t = tr.register(TP, 0)
    timer = threading.Timer(0.1, tr.done, args=(t,))
    timer.start()
    assert tr.wait_drained([TP], timeout=5)
    assert not tr.wait_drained(None, timeout=0) or tr.unfinished() == 0


def test_duplicate_ack_counts_once() -> None:
    tr = OffsetTracker()
    tr.assign(TP)
    t = tr.register(TP, 5)
    tr.register(TP, 6)
    assert tr.done(t)
    assert tr.done(t) is False  # already popped from the done prefix
    assert tr.unfinished() == 1
