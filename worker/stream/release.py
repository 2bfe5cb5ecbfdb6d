"""Keep each partition's outputs in input order while results finish out of order.

Micro-batches run side by side, and the model calls inside one finish in any order. Messages are expected
here in consume order; a message whose result (labels or a dead-letter reason) is ready is handed on
only once every earlier message of its partition has been, so each partition's records leave in the
order its messages came.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from itertools import groupby
from typing import Generic, TypeVar

from worker.stream.offsets import PartitionId, Ticket

T = TypeVar("T")
R = TypeVar("R")


class OrderedRelease(Generic[T, R]):
    def __init__(self, ticket_of: Callable[[T], Ticket], emit: Callable[[T, R], None],
                 is_current: Callable[[Ticket], bool]) -> None:
        self._ticket_of = ticket_of
        self._emit = emit
        self._is_current = is_current  # False once its partition was revoked, lost or reassigned
        self._lock = threading.Lock()
        self._queues: dict[PartitionId, deque[T]] = {}
        self._ready: dict[Ticket, R] = {}

    def expect(self, item: T) -> None:
        """Called in consume order, before the item is handed to inference."""
        with self._lock:
            self._queues.setdefault(self._ticket_of(item).tp, deque()).append(item)

    def result_ready(self, item: T, result: R) -> None:
        """The item's result is ready: emit it and whatever of its partition it was holding back.
        `emit` runs on the calling thread, under the release's lock (so emits keep their order)."""
        ticket = self._ticket_of(item)
        with self._lock:
            queue = self._queues.get(ticket.tp)
            if queue is None or not self._is_current(ticket):
                return  # its partition was revoked, lost or reassigned meanwhile: it will be redone
            self._ready[ticket] = result
            while queue:
                head = self._ticket_of(queue[0])
                if not self._is_current(head):  # left over from an earlier assignment: never comes
                    queue.popleft()
                    self._ready.pop(head, None)
                elif head in self._ready:
                    self._emit(queue.popleft(), self._ready.pop(head))
                else:
                    break

    def forget(self, tp: PartitionId) -> int:
        """Drop a revoked or lost partition's waiting items; returns how many were dropped."""
        with self._lock:
            queue = self._queues.pop(tp, deque())
            for item in queue:
                self._ready.pop(self._ticket_of(item), None)
            return len(queue)

    def describe(self) -> dict[str, dict[str, object]]:
        """Per partition: how many wait, which of them have no result yet, and the head's state."""
        with self._lock:
            out: dict[str, dict[str, object]] = {}
            for (topic, partition), queue in self._queues.items():
                tickets = [self._ticket_of(item) for item in queue]
                unfinished = [t.offset for t in tickets if t not in self._ready]
                head = tickets[0] if tickets else None
                out[f"{topic}[{partition}]"] = {
                    "waiting": len(tickets),
                    "finished": len(tickets) - len(unfinished),
                    "head_offset": None if head is None else head.offset,
                    "head_finished": head is not None and head in self._ready,
                    "head_current": head is not None and self._is_current(head),
                    "unfinished_offsets": _ranges(unfinished)}
            return out

    def waiting(self) -> int:
        with self._lock:
            return sum(len(q) for q in self._queues.values())


def _ranges(offsets: list[int], limit: int = 20) -> list[str]:
    """[3, 4, 5, 9] -> ["3-5", "9"]: a compact list for the state dump (at most `limit` runs)."""
    runs = [[off for _, off in run] for _, run in groupby(enumerate(offsets), key=lambda p: p[1] - p[0])]
    out = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs[:limit]]
    return [*out, "..."] if len(runs) > limit else out
