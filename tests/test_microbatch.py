"""Micro-batch collection with two inference threads taking from one queue."""

from __future__ import annotations

import sys
import threading
import time

from worker.stream.microbatch import MicroBatcher


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
