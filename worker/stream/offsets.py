"""Per-partition completion tracking: what is safe to commit.

Every consumed offset is registered in arrival order. It is acknowledged once its output or
dead-letter record is acknowledged by the broker. The commit point of a partition is the first
offset not yet acknowledged (or one past the last, when all are). Revoking or losing a partition
bumps its epoch, so late acknowledgements of the old assignment are ignored.

An offset at or below the highest one already registered in the same assignment is a redelivery
(a consumer that rewound its fetch position, after a pause/resume say): it is refused, since its
first copy is still being processed or is done. Registering it twice would count it twice and
leave a second copy waiting in the ordered release for a result that was already handed out.

A partition assigned again while it is still tracked (no revoke in between) is judged by the next
offset the consumer hands out. If it carries on past the highest one registered, the consumer kept
its position: the tracking carries on too, and the work in flight finishes and counts. If it starts
at or below it, the consumer re-fetched (from the committed offset, or from 0 on a broker that lost
its state): the old work is void, a new epoch starts, and everything from there is redone. Voiding
on the assignment alone would lose the in-flight messages of a consumer that kept its position:
their results would be dropped as stale and later offsets committed past them.

The staleness rule (the one gate): an acknowledgement counts only for a ticket of the partition's
current assignment (`acknowledge`). A ticket of a revoked, lost or re-fetched assignment moves no
commit point and counts in no metric, whatever reaches the broker; its message is redone by the
partition's current owner. This gate alone keeps at-least-once. `is_current` asks the same question
earlier, only to skip useless work (worker.stream.processing: before inference, before each send).

exactly_once: an aborted transaction voids its work; `rewind` starts each partition over from its
last committed offset (the consumer seeks there). Until the first re-read message arrives, messages
above the highest offset registered before are leftovers fetched before the seek: refused, the
re-read reaches them again in order.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

from worker.stream.types import PartitionId, Ticket


class _Partition:
    __slots__ = ("committed", "epoch", "first", "last", "pending", "reassigned", "skip_above")

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.pending: OrderedDict[int, bool] = OrderedDict()  # offset -> acknowledged, in arrival order
        self.committed: int | None = None  # last offset handed to commit (exclusive)
        self.last: int | None = None  # highest offset registered in this assignment
        self.reassigned = False  # assigned again since; the next offset tells whether to start over
        self.first: int | None = None  # the first offset registered in this assignment
        self.skip_above: int | None = None  # after a rewind: refuse offsets above this until one at or below it


class OffsetTracker:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: dict[PartitionId, _Partition] = {}
        self._epochs: dict[PartitionId, int] = {}
        self._in_flight = 0
        self._drained = threading.Condition(self._lock)

    def assign(self, tp: PartitionId) -> None:
        with self._lock:
            part = self._parts.get(tp)
            if part is not None:  # assigned again without a revoke: decided at the next offset
                part.reassigned = True
                return
            self._start(tp)

    def _start(self, tp: PartitionId) -> _Partition:
        old = self._parts.get(tp)
        if old is not None:  # the old assignment's unfinished work is void
            self._in_flight -= len(old.pending)
            self._drained.notify_all()
        epoch = self._epochs.get(tp, 0) + 1
        self._epochs[tp] = epoch
        part = self._parts[tp] = _Partition(epoch)
        return part

    def register(self, tp: PartitionId, offset: int) -> Ticket | None:
        """A ticket for a newly consumed offset; None for a redelivery of one already registered."""
        with self._lock:
            part = self._parts.get(tp)
            if part is None:  # a message for a partition we were not told about: track it anyway
                part = self._start(tp)
            elif part.reassigned:
                part.reassigned = False
                if part.last is not None and offset <= part.last:  # re-fetched: start over
                    part = self._start(tp)
            if part.skip_above is not None:
                if offset > part.skip_above:  # fetched before the rewind's seek
                    return None
                part.skip_above = None
            if part.last is not None and offset <= part.last:
                return None
            if part.first is None:
                part.first = offset
            part.last = offset
            part.pending[offset] = False
            self._in_flight += 1
            return Ticket(tp, offset, part.epoch)

    def rewind(self, tp: PartitionId, committed: int | None) -> int | None:
        """exactly_once, after an aborted transaction: void the partition's work and start it over
        from `committed` (its last committed offset; None: the first offset of this assignment).
        Returns where the consumer must seek to, or None when nothing is to be redone."""
        with self._lock:
            part = self._parts.get(tp)
            if part is None or part.last is None:
                return None
            start = committed if committed is not None else part.first
            if start is None or start > part.last:
                return None  # everything registered is committed: nothing to redo
            last = part.last
            fresh = self._start(tp)
            fresh.first, fresh.skip_above = start, last
            return start

    def is_current(self, ticket: Ticket) -> bool:
        """Whether the ticket's assignment is still the partition's current one (to skip useless work;
        the gate is `acknowledge`)."""
        with self._lock:
            part = self._parts.get(ticket.tp)
            return part is not None and part.epoch == ticket.epoch

    def acknowledge(self, ticket: Ticket) -> bool:
        """The broker acknowledged this offset's record. The staleness gate: False when the ticket
        belongs to a revoked or replaced assignment (the acknowledgement then counts for nothing)."""
        with self._lock:
            part = self._parts.get(ticket.tp)
            if part is None or part.epoch != ticket.epoch or ticket.offset not in part.pending:
                return False
            if not part.pending[ticket.offset]:
                part.pending[ticket.offset] = True
                self._advance(part)
            return True

    def _advance(self, part: _Partition) -> None:
        # Drop the acknowledged prefix; remember where it ends as the commit point.
        while part.pending:
            offset, acked = next(iter(part.pending.items()))
            if not acked:
                break
            part.pending.popitem(last=False)
            part.committed = offset + 1
            self._in_flight -= 1
        self._drained.notify_all()

    def commit_points(self, tps: list[PartitionId] | None = None) -> dict[PartitionId, int]:
        """Offsets (exclusive) safe to commit, for tracked partitions that have one."""
        with self._lock:
            out = {}
            for tp, part in self._parts.items():
                if tps is not None and tp not in tps:
                    continue
                if part.committed is not None:
                    out[tp] = part.committed
            return out

    def forget(self, tp: PartitionId) -> int:
        """Stop tracking a partition (revoked or lost). Returns how many unfinished it held."""
        with self._lock:
            part = self._parts.pop(tp, None)
            self._epochs[tp] = self._epochs.get(tp, 0) + 1
            if part is None:
                return 0
            unfinished = len(part.pending)
            self._in_flight -= unfinished
            self._drained.notify_all()
            return unfinished

    def unfinished(self) -> int:
        """Registered and not yet acknowledged, over every tracked partition."""
        with self._lock:
            return self._in_flight

    def wait_drained(self, tps: list[PartitionId] | None, timeout: float) -> bool:
        """Block until the given partitions (all, if None) have no unfinished work."""
        def drained() -> bool:
            if tps is None:
                return self._in_flight == 0
            return all(not self._parts[tp].pending for tp in tps if tp in self._parts)

        with self._lock:
            return self._drained.wait_for(drained, timeout=timeout)

    def describe(self) -> dict[str, dict[str, object]]:
        """Per partition: epoch, unfinished count, the first unfinished offset and the commit point
        (for the SIGUSR1 state dump)."""
        with self._lock:
            out: dict[str, dict[str, object]] = {}
            for (topic, partition), part in self._parts.items():
                head = next(iter(part.pending.items()), None)
                out[f"{topic}[{partition}]"] = {"epoch": part.epoch, "unfinished": len(part.pending),
                                                "first_unfinished": None if head is None else head[0],
                                                "committed": part.committed}
            return out

    def assigned(self) -> list[PartitionId]:
        with self._lock:
            return list(self._parts)
