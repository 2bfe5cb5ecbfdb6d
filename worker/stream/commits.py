"""Commit bookkeeping that tells the truth: a partition's committed offset is what the broker
confirmed, never merely what was asked.

An asynchronous commit (every commit interval) is *requested* until its outcome comes back through
the consumer's on_commit callback (served inside poll, on the loop's thread); a synchronous one
(revoke, shutdown) is confirmed by its return value. A partition is *due* when its commit point
differs from what the broker confirmed and, for an asynchronous commit, from what is already
requested. So a failed commit leaves its partition due: the next commit, or the synchronous one on
revoke or shutdown, asks again, even if the partition has gone idle.
"""

from __future__ import annotations

import threading

from confluent_kafka import KafkaError, TopicPartition

from worker.stream.types import PartitionId


class CommitLedger:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._confirmed: dict[PartitionId, int] = {}  # the broker took these
        self._requested: dict[PartitionId, int] = {}  # asynchronous commits awaiting their outcome

    def due(self, points: dict[PartitionId, int], *, synchronous: bool) -> dict[PartitionId, int]:
        """The commit points still to commit. A synchronous commit also covers the partitions whose
        asynchronous commit is still on its way (its outcome may be a failure)."""
        with self._lock:
            return {tp: off for tp, off in points.items()
                    if self._confirmed.get(tp) != off and (synchronous or self._requested.get(tp) != off)}

    def requested(self, offsets: dict[PartitionId, int]) -> None:
        """An asynchronous commit of these offsets was handed to the consumer."""
        with self._lock:
            self._requested.update(offsets)

    def confirmed(self, tp: PartitionId, offset: int) -> None:
        """A synchronous commit of this offset succeeded."""
        with self._lock:
            self._confirmed[tp] = offset
            if self._requested.get(tp) == offset:
                del self._requested[tp]

    def reported(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The outcome of a commit (the consumer's on_commit). Settles the asynchronous request it
        answers; a report of an older request, or of a synchronous commit, changes nothing."""
        with self._lock:
            for p in partitions:
                tp = (p.topic, p.partition)
                if self._requested.get(tp) != p.offset:
                    continue
                del self._requested[tp]
                if err is None and p.error is None:
                    self._confirmed[tp] = p.offset

    def confirmed_offset(self, tp: PartitionId) -> int | None:
        """The offset the broker confirmed for the partition in this assignment (None: none yet)."""
        with self._lock:
            return self._confirmed.get(tp)

    def forget(self, tp: PartitionId) -> None:
        """The partition was revoked or lost: what was committed for it is the next owner's business."""
        with self._lock:
            self._confirmed.pop(tp, None)
            self._requested.pop(tp, None)

    def describe(self) -> dict[str, dict[str, int | None]]:
        with self._lock:
            tps = sorted({*self._confirmed, *self._requested})
            return {f"{t}[{p}]": {"confirmed": self._confirmed.get((t, p)), "requested": self._requested.get((t, p))}
                    for t, p in tps}
