"""The stream's shared types, in one module that every step imports (and that imports no step).

    Envelope (source, key, headers, value)  what a consumed message carries through to its record
    Ticket (partition, offset, epoch)      the offset tracker's receipt for one consumed offset
    Work                                   one consumed message on its way: ticket + envelope (+ decoded)
    Outcome = Result | Rejected | Stale    what a message became: labels, a dead-letter reason, or nothing
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from worker.engine.result import Result

Header = tuple[str, bytes | None]  # a Kafka record header: name, value
PartitionId = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Ticket:
    """One consumed offset of one assignment (`epoch`) of a partition."""

    tp: PartitionId
    offset: int
    epoch: int


@dataclass(frozen=True)
class Source:
    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None


@dataclass(frozen=True)
class Envelope:
    """What travels with a message from input to output: where it came from and what to keep."""

    source: Source
    key: bytes | None
    headers: list[Header]
    value: bytes | None


@dataclass(frozen=True)
class ChatMessage:
    envelope: Envelope
    id: Any
    text: str


@dataclass(frozen=True)
class Rejected:
    """The reason a message goes to the dead-letter topic."""

    envelope: Envelope
    reason: str  # one of worker.reasons.DEAD_LETTER_REASONS
    detail: str


@dataclass(frozen=True)
class Stale:
    """Not worked on: its partition was revoked, lost or re-fetched meanwhile (the new assignment
    redoes it). Released in order like any outcome, then published as nothing."""


STALE = Stale()


@dataclass(frozen=True)
class Work:
    """One consumed message on its way through."""

    ticket: Ticket
    envelope: Envelope
    received: float  # time.monotonic() at consume
    message: ChatMessage | None  # None when decoding rejected it


Outcome = Result | Rejected | Stale  # labels, the reason for a dead letter, or nothing to publish
