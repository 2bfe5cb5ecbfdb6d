"""Keep each partition's outputs in input order while results finish out of order.

Micro-batches run side by side, and the model calls inside one finish in any order. Messages are expected
here in consume order; a message whose outcome (labels, a dead-letter reason, or Stale) is ready is handed
on only once every earlier message of its partition's assignment has been, so each partition's records
leave in the order its messages came.

The release applies no staleness rule: every expected message gets an outcome (inference gives a stale
one `Stale` without running the model), so none waits forever. Queues are kept per assignment (epoch):
an old assignment's leftovers never hold back the new one's messages, and `forget` drops a revoked or
lost partition's queues, after which their late outcomes are ignored.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from itertools import groupby
from typing import Generic, TypeVar, cast

from worker.stream.types import PartitionId, Ticket

T = TypeVar("T")
R = TypeVar("R")

_Queue = tuple[PartitionId, int]  # (partition, epoch)


class _Slot(Generic[T, R]):
    __slots__ = ("done", "item", "result")

    def __init__(self, item: T) -> None:
        self.item = item
        self.result: R | None = None
        self.done = False


class OrderedRelease(Generic[T, R]):
    def __init__(self, ticket_of: Callable[[T], Ticket], emit: Callable[[T, R], None]) -> None:
        self._ticket_of = ticket_of
        self._emit = emit
        self._lock = threading.Lock()
        self._queues: dict[_Queue, deque[_Slot[T, R]]] = {}
        self._slots: dict[Ticket, _Slot[T, R]] = {}  # every expected item not yet emitted

    def expect(self, item: T) -> None:
        """Called in consume order, before the item is handed to inference."""
        ticket = self._ticket_of(item)
        slot: _Slot[T, R] = _Slot(item)
        with self._lock:
            self._slots[ticket] = slot
            self._queues.setdefault((ticket.tp, ticket.epoch), deque()).append(slot)

    def result_ready(self, item: T, result: R) -> None:
        """The item's outcome is ready: emit it and whatever of its partition it was holding back.
        `emit` runs on the calling thread, under the release's lock (so emits keep their order)."""
        ticket = self._ticket_of(item)
        with self._lock:
            slot = self._slots.get(ticket)
            if slot is None:
                return  # its partition was revoked or lost meanwhile: forgotten, it will be redone
            slot.result, slot.done = result, True
            key = (ticket.tp, ticket.epoch)
            queue = self._queues[key]
            while queue and queue[0].done:
                head = queue.popleft()
                del self._slots[self._ticket_of(head.item)]
                self._emit(head.item, cast(R, head.result))  # done: its result is set
            if not queue:
                del self._queues[key]

    def forget(self, tp: PartitionId) -> int:
        """Drop a revoked or lost partition's waiting items; returns how many were dropped."""
        with self._lock:
            dropped = 0
            for key in [key for key in self._queues if key[0] == tp]:
                for slot in self._queues.pop(key):
                    del self._slots[self._ticket_of(slot.item)]
                    dropped += 1
            return dropped

    def describe(self) -> dict[str, dict[str, object]]:
        """Per partition assignment: how many wait, which of them have no outcome yet, and the head's state."""
        with self._lock:
            out: dict[str, dict[str, object]] = {}
            for ((topic, partition), epoch), queue in self._queues.items():
                tickets = [self._ticket_of(slot.item) for slot in queue]
                unfinished = [t.offset for t, slot in zip(tickets, queue, strict=True) if not slot.done]
                out[f"{topic}[{partition}] epoch {epoch}"] = {
                    "waiting": len(tickets),
                    "finished": len(tickets) - len(unfinished),
                    "head_offset": tickets[0].offset if tickets else None,
                    "head_finished": bool(queue) and queue[0].done,
                    "unfinished_offsets": _ranges(unfinished)}
            return out

    def waiting(self) -> int:
        with self._lock:
            return len(self._slots)


def _ranges(offsets: list[int], limit: int = 20) -> list[str]:
    """[3, 4, 5, 9] -> ["3-5", "9"]: a compact list for the state dump (at most `limit` runs)."""
    runs = [[off for _, off in run] for _, run in groupby(enumerate(offsets), key=lambda p: p[1] - p[0])]
    out = [str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs[:limit]]
    return [*out, "..."] if len(runs) > limit else out
