"""The consumer loop's rules, in-process: a fake consumer and a fake publisher around the real
stream (assembled from settings, started and closed as `run` does): loop, commit ledger, offset
tracker, decoding, batching, inference threads, ordered release and outputs."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from worker.config import BatchingSettings, KafkaSettings, Settings
from worker.observe.health import Health
from worker.observe.metrics import Metrics
from worker.stream.assemble import assemble
from worker.stream.consumer_loop import ConsumerLoop, OnCommit
from worker.stream.lifecycle import ExitStatus, Stream

from .fakes import FakeClassifier, FakeConsumer, FakeMessage, FakeSender, chat, fatal_error

P0, P1 = ("in", 0), ("in", 1)


class Rig:
    def __init__(self, max_in_flight: int = 1000, *, start: bool = True) -> None:
        settings = Settings(kafka=KafkaSettings(input_topic="in", output_topic="out", dead_letter_topic="dlq",
                                                max_in_flight=max_in_flight),
                            batching=BatchingSettings(max_wait_ms=0), shutdown_timeout_s=2)
        self.consumer = FakeConsumer()
        self.sender = FakeSender()
        self.metrics = Metrics()

        def make_consumer(on_commit: OnCommit) -> FakeConsumer:
            self.consumer.on_commit = on_commit
            return self.consumer

        self.stream: Stream = assemble(settings, FakeClassifier(), self.metrics, Health(30),
                                       make_consumer=make_consumer, sender=self.sender)
        self.loop: ConsumerLoop = self.stream.loop
        if start:
            self.stream.start()

    def feed(self, *messages: FakeMessage) -> None:
        """Queue messages and run the loop until the consumer has handed them all out."""
        self.consumer.queued.extend(messages)
        while self.consumer._ready():
            self.loop.run_once(wait_s=0)

    def commit(self) -> dict[tuple[str, int], int]:
        self.loop.commit()
        return self.consumer.committed()


@pytest.fixture()
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.stream.processing.close(1)


def test_commits_never_pass_an_unacknowledged_offset(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(*(chat("in", 0, off) for off in range(6)))
    rig.sender.wait_for(6)
    assert rig.commit() == {}
    rig.sender.ack(0, 1, 3, 4)  # offset 2 not yet acknowledged
    assert rig.commit() == {P0: 2}
    rig.sender.ack(2)
    assert rig.commit() == {P0: 5}
    rig.sender.ack(5)
    assert rig.commit() == {P0: 6}


def test_dead_letters_and_results_are_acknowledged_alike(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(chat("in", 0, 0), FakeMessage("in", 0, 1, b"not json"), chat("in", 0, 2))
    rig.sender.wait_for(3)
    assert [item.kind for item in rig.sender.sent] == ["output", "dead_letter", "output"]  # in input order
    rig.sender.ack(0, 1)
    assert rig.commit() == {P0: 2}


def test_revoke_waits_for_in_flight_work_then_commits_it(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0, P1)
    rig.feed(*(chat("in", 0, off) for off in range(3)), chat("in", 1, 0))
    rig.sender.wait_for(4)
    p0_items = [i for i, item in enumerate(rig.sender.sent) if '"0:' in item.record.value.decode()]
    timer = threading.Timer(0.2, rig.sender.ack, args=p0_items)  # acknowledged while the revoke waits
    timer.start()
    rig.consumer.rebalance("revoke", P0)
    timer.join()
    last_sync = [offsets for offsets, asynchronous in rig.consumer.commits if not asynchronous]
    assert last_sync == [{P0: 3}]
    assert rig.loop.tracker.assigned() == [P1]


def test_lost_partition_commits_nothing_even_when_acks_arrive_late(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(*(chat("in", 0, off) for off in range(3)))
    rig.sender.wait_for(3)
    rig.sender.ack(0)
    rig.consumer.rebalance("lost", P0)
    rig.sender.ack(1, 2)  # late acknowledgements of a partition another member may own
    assert rig.commit() == {}
    assert rig.loop.tracker.unfinished() == 0
    assert rig.metrics.published._value.get() == 1  # the late ones count for nothing: they will be redone


def test_pause_at_the_in_flight_bound_and_resume_at_half() -> None:
    rig = Rig(max_in_flight=4)
    try:
        rig.consumer.rebalance("assign", P0, P1)
        rig.feed(*(chat("in", 0, off) for off in range(4)))
        assert rig.consumer.paused == {P0, P1}
        rig.feed(chat("in", 1, 0))  # held back: its partition is paused
        assert rig.consumer.queued and rig.loop.tracker.unfinished() == 4
        rig.sender.wait_for(4)
        rig.sender.ack(0)
        rig.loop.run_once(wait_s=0)
        assert rig.consumer.paused == {P0, P1}, "resumed above half the bound"
        rig.sender.ack(1)
        rig.loop.run_once(wait_s=0)  # 2 in flight: half the bound, resume
        assert rig.consumer.paused == set() and rig.consumer.resume_calls >= 1
        # librdkafka would notice the resume up to a second later: a metadata request wakes it.
        assert rig.consumer.metadata_requests == 1
        rig.loop.run_once(wait_s=0)
        assert not rig.consumer.queued and rig.loop.tracker.unfinished() == 3
    finally:
        rig.stream.processing.close(1)


def test_redelivered_messages_are_skipped_not_processed_twice(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(*(chat("in", 0, off) for off in range(3)))
    rig.feed(*(chat("in", 0, off) for off in (1, 2, 3)))  # a rewound fetch position
    rig.sender.wait_for(4)
    assert rig.sender.ids() == ["0:0", "0:1", "0:2", "0:3"]
    assert rig.metrics.redelivered._value.get() == 2 and rig.metrics.consumed._value.get() == 4
    rig.sender.ack(0, 1, 2, 3)
    assert rig.commit() == {P0: 4}


def test_reassigned_without_revoke_keeping_position_loses_nothing(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(chat("in", 0, 10), chat("in", 0, 11))
    rig.consumer.rebalance("assign", P0)  # handed out again; the consumer carries on at 12
    rig.feed(chat("in", 0, 12))
    rig.sender.wait_for(3)
    rig.sender.ack(2)
    assert rig.commit() == {}  # 10 and 11 are still in flight and count
    rig.sender.ack(0, 1)
    assert rig.commit() == {P0: 13}


def test_reassigned_without_revoke_and_refetched_starts_over(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(chat("in", 0, 500), chat("in", 0, 501))
    rig.sender.wait_for(2)
    rig.consumer.rebalance("assign", P0)  # a broker that lost its state: offsets start again at 0
    rig.feed(chat("in", 0, 0), chat("in", 0, 1))
    rig.sender.wait_for(4)
    rig.sender.ack(0, 1)  # the old assignment's acknowledgements count for nothing
    assert rig.commit() == {} and rig.loop.tracker.unfinished() == 2
    rig.sender.ack(2, 3)
    assert rig.commit() == {P0: 2}


def test_shutdown_drains_flushes_commits_and_closes(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(*(chat("in", 0, off) for off in range(3)))
    rig.sender.wait_for(3)
    threading.Timer(0.2, rig.sender.ack, args=(0, 1, 2)).start()
    assert rig.stream.close(2) and rig.stream.exit_status() == ExitStatus.CLEAN
    assert rig.consumer.commits[-1] == ({P0: 3}, False) and rig.consumer.closed and rig.sender.closed


def _acked(rig: Rig, n: int) -> None:
    """Partition 0 assigned, offsets 0..n-1 consumed and acknowledged."""
    rig.consumer.rebalance("assign", P0)
    rig.feed(*(chat("in", 0, off) for off in range(n)))
    rig.sender.wait_for(n)
    rig.sender.ack(*range(n))


def test_a_failed_async_commit_leaves_the_partition_due(rig: Rig) -> None:
    _acked(rig, 3)
    rig.consumer.fail_async_commits = 1
    assert rig.commit() == {}  # requested; the broker's refusal arrives with the next poll
    rig.loop.run_once(wait_s=0)
    assert rig.commit() == {P0: 3}, "the partition went idle after a failed commit and was never committed"
    assert rig.metrics.commit_failures._value.get() == 1


def test_revoke_commits_what_a_failed_async_commit_left(rig: Rig) -> None:
    _acked(rig, 3)
    rig.consumer.fail_async_commits = 1
    rig.loop.commit()
    rig.loop.run_once(wait_s=0)
    rig.consumer.rebalance("revoke", P0)
    assert rig.consumer.commits[-1] == ({P0: 3}, False) and rig.consumer.committed() == {P0: 3}


def test_shutdown_commits_what_a_failed_async_commit_left(rig: Rig) -> None:
    _acked(rig, 3)
    rig.consumer.fail_async_commits = 1
    rig.loop.commit()
    rig.loop.run_once(wait_s=0)
    assert rig.stream.close(1)
    assert rig.consumer.commits[-1] == ({P0: 3}, False) and rig.consumer.committed() == {P0: 3}


def test_a_commit_in_flight_or_confirmed_is_not_asked_again(rig: Rig) -> None:
    _acked(rig, 3)
    rig.loop.commit()
    rig.loop.commit()  # its report has not come yet: not asked twice
    rig.loop.run_once(wait_s=0)  # confirmed
    rig.loop.commit()
    assert rig.consumer.commits == [({P0: 3}, True)]


def test_nothing_starts_before_start_and_close_stops_what_started() -> None:
    rig = Rig(start=False)
    assert not rig.sender.started and rig.consumer.callbacks == {}
    assert not any(t.is_alive() for t in rig.stream.processing.threads)
    rig.stream.start()
    assert rig.sender.started and rig.consumer.callbacks and all(t.is_alive() for t in rig.stream.processing.threads)
    assert rig.stream.close(1) and rig.stream.exit_status() == ExitStatus.CLEAN
    assert rig.sender.closed and rig.consumer.closed
    assert not any(t.is_alive() for t in rig.stream.processing.threads)


def test_a_run_that_stops_with_work_unfinished_exits_non_zero(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(*(chat("in", 0, off) for off in range(3)))
    rig.sender.wait_for(3)
    rig.sender.ack(0)  # 1 and 2 are never acknowledged
    assert not rig.stream.close(0.5)
    assert rig.stream.exit_status() == ExitStatus.UNFINISHED == 1
    assert rig.consumer.commits[-1] == ({P0: 1}, False)  # what was done is committed all the same


def test_a_fatal_consumer_error_ends_the_run_with_its_own_exit_status() -> None:
    rig = Rig(start=False)
    rig.consumer.queued.append(fatal_error())
    stop = threading.Event()
    timer = threading.Timer(5, stop.set)  # the run must end by itself, long before this
    timer.start()
    try:
        status = rig.stream.run(stop)
    finally:
        timer.cancel()
    assert not stop.is_set() and status == ExitStatus.FATAL == 3
    assert rig.consumer.closed and rig.sender.closed


def test_close_bounds_the_revoke_it_triggers_by_the_shutdown_timeout(rig: Rig) -> None:
    """librdkafka revokes the partitions when the consumer closes: that revoke must not wait its own
    revoke timeout on top of the drain the stream already gave the in-flight work."""
    import time

    rig.consumer.rebalance("assign", P0)
    rig.feed(*(chat("in", 0, off) for off in range(3)))
    rig.sender.wait_for(3)  # never acknowledged: the drain cannot finish
    close = rig.consumer.close

    def close_revoking() -> None:
        rig.consumer.rebalance("revoke", P0)
        close()

    rig.consumer.close = close_revoking  # type: ignore[method-assign]
    started = time.monotonic()
    assert rig.stream.close(1.0) is False
    assert time.monotonic() - started < 2.5  # the revoke's own timeout is 10 s
    assert rig.stream.exit_status() == ExitStatus.UNFINISHED
