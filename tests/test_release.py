"""Outputs leave in each partition's input order, however inference finishes."""

from __future__ import annotations

import random

from worker.stream.offsets import OffsetTracker
from worker.stream.release import OrderedRelease
from worker.stream.types import Ticket


def reg(tracker: OffsetTracker, tp: tuple[str, int], offset: int) -> Ticket:
    ticket = tracker.register(tp, offset)
    assert ticket is not None
    return ticket


def expect(tracker: OffsetTracker, release: OrderedRelease[Ticket, str], offsets: list[int]) -> list[Ticket]:
    """Register these offsets of partition ("in", 0) and expect them in the release, in order."""
    tickets = [reg(tracker, ("in", 0), off) for off in offsets]
    for t in tickets:
        release.expect(t)
    return tickets


def make() -> tuple[OrderedRelease[Ticket, str], list[tuple[Ticket, str]]]:
    out: list[tuple[Ticket, str]] = []
    return OrderedRelease(lambda t: t, lambda t, r: out.append((t, r))), out


def test_out_of_order_results_leave_in_partition_order() -> None:
    release, out = make()
    tickets = [Ticket(("in", p), off, 1) for off in range(50) for p in (0, 1, 2)]
    for t in tickets:
        release.expect(t)
    shuffled = list(tickets)
    random.Random(7).shuffle(shuffled)
    for t in shuffled:
        release.result_ready(t, f"r{t.tp[1]}-{t.offset}")
    assert len(out) == len(tickets) and release.waiting() == 0
    for p in (0, 1, 2):
        emitted = [t.offset for t, _ in out if t.tp == ("in", p)]
        assert emitted == list(range(50))
    assert all(r == f"r{t.tp[1]}-{t.offset}" for t, r in out)


def test_a_partition_waits_only_for_its_own_earlier_messages() -> None:
    release, out = make()
    a0, a1, b0 = Ticket(("in", 0), 0, 1), Ticket(("in", 0), 1, 1), Ticket(("in", 1), 0, 1)
    for t in (a0, a1, b0):
        release.expect(t)
    release.result_ready(a1, "a1")
    release.result_ready(b0, "b0")
    assert out == [(b0, "b0")]  # a1 is held back behind a0; partition 1 is not
    release.result_ready(a0, "a0")
    assert out == [(b0, "b0"), (a0, "a0"), (a1, "a1")]


def test_revoked_partition_is_forgotten_and_late_results_ignored() -> None:
    tracker = OffsetTracker()
    tracker.assign(("in", 0))
    release, out = make()
    old = expect(tracker, release, [0, 1, 2])
    release.result_ready(old[1], "late")
    assert release.forget(("in", 0)) == 3
    tracker.forget(("in", 0))
    release.result_ready(old[0], "late")
    tracker.assign(("in", 0))
    new = reg(tracker, ("in", 0), 0)  # reassigned: new epoch, same offsets redone
    release.expect(new)
    release.result_ready(old[2], "late")
    release.result_ready(new, "fresh")
    assert out == [(new, "fresh")]


def test_reassigned_without_revoke_old_work_never_blocks_new() -> None:
    """A broker that lost its state hands the partition out again (and offsets restart at 0): the
    old assignment's unfinished messages must not hold back the new one's. The release applies no
    staleness rule: the old ones leave when their (stale) outcomes come, and count for nothing."""
    tracker = OffsetTracker()
    tracker.assign(("in", 0))
    release, out = make()
    stuck = expect(tracker, release, [500, 501])
    tracker.assign(("in", 0))
    fresh = expect(tracker, release, [0, 1])
    assert tracker.unfinished() == 2  # the old assignment's two are void
    release.result_ready(fresh[1], "b")
    release.result_ready(fresh[0], "a")
    assert out == [(fresh[0], "a"), (fresh[1], "b")] and release.waiting() == 2
    release.result_ready(stuck[1], "stale")
    release.result_ready(stuck[0], "stale")
    assert out[2:] == [(stuck[0], "stale"), (stuck[1], "stale")] and release.waiting() == 0
    assert not tracker.acknowledge(stuck[0]) and not tracker.acknowledge(stuck[1])  # the gate
    assert tracker.commit_points() == {}


def test_reassigned_while_consumer_keeps_its_position_loses_nothing() -> None:
    """The same partition handed out again (a cooperative rebalance) while the consumer carries on
    from where it was: the work in flight is not redone by anyone, so it must still be published
    and counted, and nothing may be committed past it."""
    tracker = OffsetTracker()
    tracker.assign(("in", 0))
    release, out = make()
    flying = expect(tracker, release, [10, 11])
    tracker.assign(("in", 0))
    after = reg(tracker, ("in", 0), 12)
    release.expect(after)
    release.result_ready(after, "c")
    assert tracker.acknowledge(after) and tracker.commit_points() == {}
    release.result_ready(flying[0], "a")
    release.result_ready(flying[1], "b")
    assert out == [(flying[0], "a"), (flying[1], "b"), (after, "c")]
    assert tracker.acknowledge(flying[0]) and tracker.acknowledge(flying[1])
    assert tracker.commit_points() == {("in", 0): 13} and tracker.unfinished() == 0


def test_redelivery_never_strands_a_partition() -> None:
    """The release only ever sees a ticket once: a redelivered offset is refused at registration,
    so it cannot leave a second copy queued behind the first that no result will ever reach."""
    tracker = OffsetTracker()
    tracker.assign(("in", 0))
    release, out = make()
    a, b = reg(tracker, ("in", 0), 0), reg(tracker, ("in", 0), 1)
    release.expect(a)
    release.expect(b)
    assert tracker.register(("in", 0), 0) is None
    c = reg(tracker, ("in", 0), 2)
    release.expect(c)
    release.result_ready(c, "c")
    release.result_ready(a, "a")
    release.result_ready(b, "b")
    assert out == [(a, "a"), (b, "b"), (c, "c")]
    assert release.waiting() == 0


def test_forgotten_partition_leaks_nothing_and_late_results_are_ignored() -> None:
    release, out = make()
    tickets = [Ticket(("in", 0), off, 1) for off in range(3)]
    for t in tickets:
        release.expect(t)
    release.result_ready(tickets[2], "c")
    assert release.forget(("in", 0)) == 3 and release.waiting() == 0
    for t in tickets:
        release.result_ready(t, "late")
    again = Ticket(("in", 0), 0, 2)
    release.expect(again)
    release.result_ready(again, "fresh")
    assert out == [(again, "fresh")] and release.waiting() == 0 and release.describe() == {}
