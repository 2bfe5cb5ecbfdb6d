"""Collect decoded messages into micro-batches, sized by the time they will take.

A micro-batch closes at whichever comes first:
- `max_size` messages;
- its estimated compute time reaches `budget_s`: each message's cost (its estimated tokens) at the
  rate the engine was measured to get through them, recently, while busy (`ComputeRate`). Until
  that rate is known (nothing finished yet), only the count limits a batch;
- a gap: the queue is empty and no new message came for `gap_s` (a burst is over; at a trickle a
  lone message goes on at once instead of waiting for company that is not coming);
- `max_wait_s` after its first message.

Under load the inference threads are busy, messages queue meanwhile, and the next batch takes what
queued, up to the budget: batches grow with the load, but never past what takes `budget_s` to
compute, so a message waits at most about a batch ahead of it plus its own.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

GAP_S = 0.002  # no new message for this long, with the queue empty: the batch closes
HORIZON_TOKENS = 5_000.0  # the compute rate is averaged over about this much work (~0.2 s on 2 cores, int8)
# Batches under this share of the budget tell more about a call's fixed cost than about the engine's
# speed: they do not move the measured rate (at a trickle it stays what the last busy spell measured).
MEASURED_SHARE = 0.25


class ComputeRate:
    """Cost (e.g. estimated tokens) finished per second while at least one batch is in inference,
    averaged over about the last `horizon` units of cost (older work fades out exponentially, so
    big batches weigh in by their size and a trickle of tiny ones moves the figure slowly)."""

    def __init__(self, horizon: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.horizon = horizon
        self._clock = clock
        self._lock = threading.Lock()
        self._running = 0
        self._changed = clock()
        self._busy_s = 0.0  # busy time since the last finished batch
        self._cost_sum = 0.0
        self._time_sum = 0.0

    def _tick(self, now: float) -> None:
        if self._running:
            self._busy_s += now - self._changed
        self._changed = now

    def started(self) -> None:
        with self._lock:
            self._tick(self._clock())
            self._running += 1

    def finished(self, cost: float, *, measure: bool = True) -> None:
        """A batch is done; with `measure` false its time and cost do not move the rate."""
        with self._lock:
            self._tick(self._clock())
            self._running = max(0, self._running - 1)
            if not measure:
                self._busy_s = 0.0
                return
            keep = math.exp(-cost / self.horizon)
            self._cost_sum = self._cost_sum * keep + cost
            self._time_sum = self._time_sum * keep + self._busy_s
            self._busy_s = 0.0

    def per_second(self) -> float | None:
        """The measured rate; None before any batch with a measurable time finished."""
        with self._lock:
            return self._cost_sum / self._time_sum if self._time_sum > 0 and self._cost_sum > 0 else None


class MicroBatcher(Generic[T]):
    def __init__(self, max_size: int, max_wait_s: float, *, gap_s: float = GAP_S,
                 cost: Callable[[T], float] | None = None, budget_s: float | None = None,
                 rate: ComputeRate | None = None) -> None:
        """`cost(item)`, `budget_s` and `rate` together size batches by time (all or none)."""
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.gap_s = gap_s
        self.cost = cost
        self.budget_s = budget_s
        sized_by_time = cost is not None and budget_s is not None
        self.rate = rate if rate is not None else (ComputeRate(HORIZON_TOKENS) if sized_by_time else None)
        # queue.Queue, not SimpleQueue: on CPython before 3.13, a SimpleQueue.get(timeout=...) that
        # is woken after its deadline, only to find the item taken by another consumer, waits with
        # a negative timeout, i.e. until the next put. Two inference threads hit that: one sat on a
        # half-collected micro-batch while the partitions were paused for back-pressure, forever.
        self._queue: queue.Queue[T] = queue.Queue()
        self._running = 0  # batches handed out and not yet done
        self._running_lock = threading.Lock()

    def put(self, item: T) -> None:
        self._queue.put(item)

    def qsize(self) -> int:
        return self._queue.qsize()

    def budget(self) -> float:
        """The cost a batch may reach now: budget_s at the measured rate (infinite when unknown)."""
        per_second = self.rate.per_second() if self.rate is not None else None
        if self.budget_s is None or self.cost is None or per_second is None:
            return math.inf
        return self.budget_s * per_second

    def next_batch(self, idle_timeout_s: float) -> list[T]:
        """Block up to idle_timeout_s for a first item; [] if none came. A batch handed out is
        being computed until `done(batch)` is called (the measured rate counts that time)."""
        try:
            first = self._queue.get(timeout=idle_timeout_s)
        except queue.Empty:
            return []
        batch = [first]
        cost = self.cost
        budget = self.budget()
        spent = cost(first) if cost is not None else 0.0
        start = time.monotonic()
        deadline, busy_deadline = start + self.max_wait_s, start + max(self.max_wait_s, self.budget_s or 0.0)
        while len(batch) < self.max_size and spent < budget:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                more = self._wait_for_more(deadline, busy_deadline)
                if more is None:
                    break
                item = more
            batch.append(item)
            if cost is not None:
                spent += cost(item)
        with self._running_lock:
            self._running += 1
        if self.rate is not None:
            self.rate.started()
        return batch

    def _wait_for_more(self, deadline: float, busy_deadline: float) -> T | None:
        """The next item, or None when the batch should close: no item for gap_s with no other
        batch in inference, or the deadline. While another batch is in inference this one could
        not start anyway: it keeps collecting, past gaps, until that one is done (or until
        busy_deadline), so that under load batches grow and cost less per message."""
        while True:
            busy = self._running > 0
            remaining = min((busy_deadline if busy else deadline) - time.monotonic(), self.gap_s)
            if remaining <= 0:
                return None
            try:
                return self._queue.get(timeout=remaining)
            except queue.Empty:
                if self._running == 0:
                    return None

    def done(self, batch: Sequence[T]) -> None:
        """A batch from next_batch is finished: its cost and time go into the measured rate."""
        with self._running_lock:
            self._running = max(0, self._running - 1)
        if self.rate is not None and self.cost is not None:
            cost = sum(self.cost(item) for item in batch)
            budget = self.budget()  # infinite until a first batch is measured
            self.rate.finished(cost, measure=math.isinf(budget) or cost >= MEASURED_SHARE * budget)


def estimated_tokens(text: str) -> float:
    """A text's model cost before tokenizing it: about 4 characters per word-piece token in
    English, plus the 2 special tokens (a batch-sizing estimate, not a count)."""
    return len(text) / 4 + 2
