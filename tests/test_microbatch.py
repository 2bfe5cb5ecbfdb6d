"""Micro-batches: two inference threads taking from one queue, the gap that sends a lone message at
once, and batches sized by their estimated compute time."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

import orjson
import pytest

from worker.engine.result import Timing
from worker.observe.metrics import Metrics
from worker.stream.microbatch import ComputeRate, MicroBatcher
from worker.stream.offsets import OffsetTracker
from worker.stream.outputs import OutputOptions, Outputs
from worker.stream.processing import Processing, ProcessingOptions
from worker.stream.types import Envelope, Source

from .fakes import FakeClassifier, FakeSender


def test_a_waiter_robbed_after_its_deadline_returns() -> None:
    """Thread A waits for a first item; one arrives just as A's wait ends, but thread B takes it
    before A runs again. A must give up at its deadline, not wait for the next put: in the
    worker, the next put may never come (partitions paused while A sits on a half-built batch).
    CPython's SimpleQueue (before 3.13) waits forever here; the GIL is held across A's deadline
    to make the interleaving certain."""
    batcher: MicroBatcher[int] = MicroBatcher(max_size=8, max_wait_s=0.01)
    result: list[list[int]] = []
    waiting_from = time.monotonic()
    a = threading.Thread(target=lambda: result.append(batcher.next_batch(idle_timeout_s=0.2)), daemon=True)
    a.start()
    time.sleep(0.1)  # A is blocked in its wait
    interval = sys.getswitchinterval()
    sys.setswitchinterval(30)  # keep the GIL until this thread blocks
    try:
        batcher.put(1)  # wakes A, which now needs the GIL
        while time.monotonic() < waiting_from + 0.25:
            pass  # A's deadline passes while it cannot run
        stolen = batcher.next_batch(idle_timeout_s=0)  # B takes the item first
    finally:
        sys.setswitchinterval(interval)
    assert stolen == [1]
    a.join(timeout=2)
    assert not a.is_alive(), "the robbed waiter hung past its deadline"
    assert result == [[]]


def test_batches_fill_up_to_max_size_and_keep_order() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_size=3, max_wait_s=0.01)
    for i in range(7):
        batcher.put(i)
    assert [batcher.next_batch(0.1) for _ in range(4)] == [[0, 1, 2], [3, 4, 5], [6], []]


def test_a_lone_message_goes_at_once() -> None:
    """At a trickle nothing else is coming: the batch closes after the gap, not after max_wait."""
    batcher: MicroBatcher[int] = MicroBatcher(max_size=128, max_wait_s=5.0)
    batcher.put(1)
    t0 = time.monotonic()
    assert batcher.next_batch(idle_timeout_s=0.1) == [1]
    assert time.monotonic() - t0 < 1.0, "the lone message waited for max_wait"


def test_a_burst_stays_together_and_the_next_one_waits_for_its_own_batch() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_size=100, max_wait_s=5.0, gap_s=0.2)

    def burst() -> None:
        for i in range(10):
            batcher.put(i)
            time.sleep(0.02)  # far inside the gap
        time.sleep(0.6)  # far past it
        batcher.put(10)

    producer = threading.Thread(target=burst, daemon=True)
    producer.start()
    first = batcher.next_batch(idle_timeout_s=2.0)
    assert first == list(range(10))
    batcher.done(first)
    assert batcher.next_batch(idle_timeout_s=3.0) == [10]
    producer.join(timeout=5)


def test_a_batch_keeps_collecting_while_another_is_in_inference() -> None:
    """Past gaps, until the batch ahead is done: it could not start before anyway, and bigger
    batches cost less per message under load. Then it closes after the gap."""
    batcher: MicroBatcher[int] = MicroBatcher(max_size=100, max_wait_s=0.05, gap_s=0.05, cost=lambda _: 1.0,
                                              budget_s=5.0)
    batcher.put(-1)
    ahead = batcher.next_batch(idle_timeout_s=0.1)  # in inference until done()

    def arrivals() -> None:
        for i in range(5):
            batcher.put(i)
            time.sleep(0.1)  # twice the gap
        time.sleep(0.2)
        batcher.done(ahead)

    threading.Thread(target=arrivals, daemon=True).start()
    t0 = time.monotonic()
    assert batcher.next_batch(idle_timeout_s=1.0) == [0, 1, 2, 3, 4]
    assert 0.6 <= time.monotonic() - t0 < 3.0


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_compute_rate_counts_busy_time_only() -> None:
    clock = Clock()
    rate = ComputeRate(horizon=1e9, clock=clock)
    assert rate.per_second() is None
    rate.started()
    clock.now = 0.1
    rate.finished(1000)
    clock.now = 5.0  # idle: not the engine's time
    rate.started()
    clock.now = 5.1
    rate.finished(1000)
    assert rate.per_second() == pytest.approx(10_000)


def test_compute_rate_counts_overlapping_batches_once() -> None:
    """Two batches in inference side by side share the engine: the time is the union, not the sum."""
    clock = Clock()
    rate = ComputeRate(horizon=1e9, clock=clock)
    rate.started()
    clock.now = 0.05
    rate.started()
    clock.now = 0.1
    rate.finished(500)
    clock.now = 0.2
    rate.finished(500)
    assert rate.per_second() == pytest.approx(1000 / 0.2)


def test_compute_rate_forgets_old_work() -> None:
    clock = Clock()
    rate = ComputeRate(horizon=100, clock=clock)
    for _ in range(50):  # slow, long ago
        rate.started()
        clock.now += 1.0
        rate.finished(100)
    for _ in range(50):  # ten times faster now
        rate.started()
        clock.now += 0.1
        rate.finished(100)
    per_second = rate.per_second()
    assert per_second is not None and 900 < per_second <= 1000


def test_a_batch_closes_at_its_compute_budget() -> None:
    """Cost 10 per item at a measured 1000 per second: a 50 ms budget holds 5 items."""
    clock = Clock()
    rate = ComputeRate(horizon=1e9, clock=clock)
    batcher: MicroBatcher[int] = MicroBatcher(max_size=8, max_wait_s=0.01, cost=lambda _: 10.0, budget_s=0.05,
                                              rate=rate)
    for i in range(12):
        batcher.put(i)
    first = batcher.next_batch(idle_timeout_s=0.1)
    assert first == list(range(8)), "before any batch finished, the count alone limits it"
    clock.now = 0.08
    batcher.done(first)  # 80 units in 0.08 s
    assert rate.per_second() == pytest.approx(1000)
    assert batcher.next_batch(idle_timeout_s=0.1) == [8, 9, 10, 11]  # all there was
    for i in range(12, 24):
        batcher.put(i)
    clock.now = 0.1  # the batch [8..11] is still running, so this one shares its time
    assert batcher.next_batch(idle_timeout_s=0.1) == [12, 13, 14, 15, 16]


def test_sized_by_count_alone_without_a_budget() -> None:
    batcher: MicroBatcher[int] = MicroBatcher(max_size=4, max_wait_s=0.01)
    assert batcher.rate is None
    for i in range(6):
        batcher.put(i)
    batch = batcher.next_batch(0.1)
    batcher.done(batch)
    assert batch == [0, 1, 2, 3]
    assert batcher.budget() == float("inf")


class SlowClassifier(FakeClassifier):
    """1 ms per text, and the size of every batch it was given."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    def classify_stream(self, texts: list[str], timing: Timing | None = None) -> Any:
        self.batches.append(len(texts))
        time.sleep(0.001 * len(texts))
        yield from super().classify_stream(texts, timing)


def test_batches_cut_by_compute_time_publish_every_message_once_in_order() -> None:
    """A budget of 2 ms at ~1 ms a text: once a batch finished (the rate is known), batches of a
    text or two, not the 64 the count allows; every message still gets one output, each partition
    in order."""
    tracker = OffsetTracker()
    sender = FakeSender()
    classifier = SlowClassifier()
    metrics = Metrics()
    outputs = Outputs(OutputOptions("out", "dlq", "all", 4, 1_000_000), sender, classifier.identity, metrics,
                      acknowledge=tracker.acknowledge, wanted=tracker.is_current)
    processing = Processing(ProcessingOptions("text", "id", 65536, max_batch_size=64, max_wait_s=0.01,
                                              concurrent_batches=2, max_batch_s=0.002),
                            classifier, outputs, metrics, wanted=tracker.is_current)
    processing.start()
    try:
        for partition in (0, 1):
            tracker.assign(("in", partition))
        for offset in range(60):
            for partition in (0, 1):
                ticket = tracker.register(("in", partition), offset)
                assert ticket is not None
                value = orjson.dumps({"id": f"{partition}:{offset}", "text": f"message number {offset}"})
                processing.submit(ticket, Envelope(Source("in", partition, offset, 0), None, [], value))
            if offset == 4:  # a first batch finishes: the rate is measured
                sender.wait_for(10)
        sender.wait_for(120)
    finally:
        processing.close(2)
    ids = sender.ids()
    assert sorted(ids) == sorted(f"{p}:{o}" for p in (0, 1) for o in range(60))
    for partition in (0, 1):
        offsets = [int(i.split(":")[1]) for i in ids if i.startswith(f"{partition}:")]
        assert offsets == list(range(60))
    assert sum(classifier.batches) == 120
    later = classifier.batches[len(classifier.batches) // 2:]
    assert max(later) <= 4, classifier.batches


def test_small_batches_do_not_move_the_measured_rate() -> None:
    """A trickle's one-text batches cost mostly a call's fixed cost: measured, they would make the
    engine look slow and cut the next burst into small batches."""
    clock = Clock()
    rate = ComputeRate(horizon=1e9, clock=clock)
    batcher: MicroBatcher[int] = MicroBatcher(max_size=100, max_wait_s=0.01, cost=lambda _: 10.0, budget_s=0.1,
                                              rate=rate)
    for i in range(100):
        batcher.put(i)
    burst = batcher.next_batch(0.1)
    clock.now += 0.1
    batcher.done(burst)  # 1000 units in 0.1 s
    for i in range(20):  # a trickle: 1 unit-10 item in 5 ms each
        batcher.put(i)
        lone = batcher.next_batch(0.1)
        clock.now += 0.005
        batcher.done(lone)
        clock.now += 1.0
    assert rate.per_second() == pytest.approx(10_000)
