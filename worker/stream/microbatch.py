"""Collect decoded messages into micro-batches: up to max_size, waiting at most max_wait for
more once the first has arrived (so a trickle pays at most max_wait of batching delay)."""

from __future__ import annotations

import queue
import time
from typing import Generic, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    def __init__(self, max_size: int, max_wait_s: float) -> None:
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        # queue.Queue, not SimpleQueue: on CPython before 3.13, a SimpleQueue.get(timeout=...) that
        # is woken after its deadline, only to find the item taken by another consumer, waits with
        # a negative timeout, i.e. until the next put. Two inference threads hit that: one sat on a
        # half-collected micro-batch while the partitions were paused for back-pressure, forever.
        self._queue: queue.Queue[T] = queue.Queue()

    def put(self, item: T) -> None:
        self._queue.put(item)

    def qsize(self) -> int:
        return self._queue.qsize()

    def next_batch(self, idle_timeout_s: float) -> list[T]:
        """Block up to idle_timeout_s for a first item; [] if none came."""
        try:
            first = self._queue.get(timeout=idle_timeout_s)
        except queue.Empty:
            return []
        batch = [first]
        deadline = time.monotonic() + self.max_wait_s
        while len(batch) < self.max_size:
            try:
                batch.append(self._queue.get_nowait())
                continue
            except queue.Empty:
                pass
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                batch.append(self._queue.get(timeout=remaining))
            except queue.Empty:
                break
        return batch
