"""What each consumed message becomes, by one path: a result record on the output topic or a dead
letter (from decoding or from inference alike), and what its acknowledgement does: the offset is
acknowledged to the tracker (the staleness gate), then the metrics count it. A `Stale` outcome
becomes nothing."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from worker.engine.result import ModelIdentity, Result
from worker.observe.health import Health
from worker.observe.metrics import Metrics
from worker.stream.publish import Outgoing
from worker.stream.records import dead_letter_record, output_record, shrink_dead_letter
from worker.stream.types import Outcome, Rejected, Stale, Ticket, Work


@dataclass(frozen=True)
class OutputOptions:
    output_topic: str
    dead_letter_topic: str
    scores: str  # "all" or "passing"
    decimals: int  # scores rounded to this many decimals
    max_dead_letter_bytes: int  # the producer's message.max.bytes: a dead letter above it is cut


class Sender(Protocol):
    """What the stream needs of a publisher (worker.stream.publish.Publisher, or a test's fake).
    Started and closed by its owner, the stream (worker.stream.lifecycle)."""

    def start(self) -> None: ...

    @property
    def threads(self) -> list[threading.Thread]: ...  # what start() started, for the health check

    def send(self, item: Outgoing) -> None: ...

    def close(self, timeout: float) -> bool: ...

    def healthy(self) -> bool: ...

    def describe(self) -> dict[str, object]: ...


class Outputs:
    def __init__(self, options: OutputOptions, sender: Sender, identity: ModelIdentity, metrics: Metrics, *,
                 acknowledge: Callable[[Ticket], bool], wanted: Callable[[Ticket], bool]) -> None:
        """`identity`: the model's embedder and head (each result carries its thresholds' hash).
        `acknowledge`: the offset tracker's gate. `wanted`: whether a record is still worth (re)sending."""
        self.options = options
        self.sender = sender
        self.identity = identity
        self.metrics = metrics
        self._acknowledge = acknowledge
        self._wanted = wanted

    def publish(self, work: Work, outcome: Outcome) -> None:
        """Hand the record for `work` to the publisher; its acknowledgement acknowledges the offset."""
        if isinstance(outcome, Stale):
            return  # its partition went away: the new assignment redoes it
        o, ticket = self.options, work.ticket
        if isinstance(outcome, Rejected):
            record = dead_letter_record(outcome, max_record_bytes=o.max_dead_letter_bytes)
            on_ack: Callable[[], None] = _DeadLettered(self._acknowledge, self.metrics, ticket, outcome.reason)
            topic, kind = o.dead_letter_topic, "dead_letter"
        else:
            assert work.message is not None  # only decoded messages reach inference
            record = output_record(work.message, outcome, self.identity, scores=o.scores, decimals=o.decimals,
                                   processing_ms=(time.monotonic() - work.received) * 1000)
            on_ack = _Published(self._acknowledge, self.metrics, ticket, work.envelope.source.timestamp_ms, outcome)
            topic, kind = o.output_topic, "output"
        self.sender.send(Outgoing(topic, kind, record, on_ack, wanted=lambda: self._wanted(ticket),
                                  shrink=shrink_dead_letter if kind == "dead_letter" else None))


class _Published:
    """A result was acknowledged: the offset, then latency and label metrics."""

    __slots__ = ("acknowledge", "metrics", "result", "ticket", "ts_ms")

    def __init__(self, acknowledge: Callable[[Ticket], bool], metrics: Metrics, ticket: Ticket, ts_ms: int | None,
                 result: Result) -> None:
        self.acknowledge, self.metrics, self.ticket = acknowledge, metrics, ticket
        self.ts_ms, self.result = ts_ms, result

    def __call__(self) -> None:
        if not self.acknowledge(self.ticket):
            return  # its partition went away meanwhile: the new owner redoes and counts it
        m = self.metrics
        m.published.inc()
        if self.ts_ms is not None:
            m.latency.observe(max(0.0, time.time() - self.ts_ms / 1000))
        if self.result.no_label:
            m.no_label.inc()
        for label in self.result.labels:
            m.labels.labels(label=label).inc()


class _DeadLettered:
    __slots__ = ("acknowledge", "metrics", "reason", "ticket")

    def __init__(self, acknowledge: Callable[[Ticket], bool], metrics: Metrics, ticket: Ticket, reason: str) -> None:
        self.acknowledge, self.metrics, self.ticket, self.reason = acknowledge, metrics, ticket, reason

    def __call__(self) -> None:
        if self.acknowledge(self.ticket):
            self.metrics.dead_lettered.labels(reason=self.reason).inc()


def produce_failure_reporter(metrics: Metrics, health: Health) -> Callable[[Outgoing, str], None]:
    """For the publisher's on_failure: count the failed attempt and show it on /readyz."""

    def report(item: Outgoing, error: str) -> None:
        metrics.produce_failures.labels(topic_kind=item.kind).inc()
        health.output_error = error[:200]

    return report
