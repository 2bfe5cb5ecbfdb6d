"""What each consumed message becomes, by one path: a result record on the output topic or a dead
letter (from decoding or from inference alike), and what its acknowledgement does: the offset is
acknowledged to the tracker, then the metrics count it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from worker.config import Settings
from worker.engine.result import ModelIdentity, Result
from worker.observe.health import Health
from worker.observe.metrics import Metrics
from worker.stream.decode import ChatMessage, Envelope, Rejected
from worker.stream.kafka_conf import max_message_bytes
from worker.stream.offsets import Ticket
from worker.stream.publish import Outgoing
from worker.stream.records import dead_letter_record, output_record, shrink_dead_letter


@dataclass(frozen=True)
class Work:
    """One consumed message on its way through."""

    ticket: Ticket
    envelope: Envelope
    received: float  # time.monotonic() at consume
    message: ChatMessage | None  # None when decoding rejected it


Outcome = Result | Rejected  # labels, or the reason for a dead letter


class Sender(Protocol):
    """What Outputs needs of a publisher (worker.stream.publish.Publisher, or a test's fake)."""

    def send(self, item: Outgoing) -> None: ...

    def close(self, timeout: float) -> int: ...

    def healthy(self) -> bool: ...

    def describe(self) -> dict[str, object]: ...


class Outputs:
    def __init__(self, settings: Settings, sender: Sender, identity: ModelIdentity, metrics: Metrics, *,
                 acknowledge: Callable[[Ticket], bool], is_current: Callable[[Ticket], bool]) -> None:
        self.sender = sender
        self.identity = identity
        self.metrics = metrics
        self._acknowledge = acknowledge
        self._is_current = is_current
        self._output_topic = settings.kafka.output_topic
        self._dead_letter_topic = settings.kafka.dead_letter_topic
        self._scores, self._decimals = settings.output.scores, settings.output.decimals
        self._max_dead_letter_bytes = max_message_bytes(settings.kafka)  # the whole input, if it can be sent

    def publish(self, work: Work, outcome: Outcome) -> None:
        """Hand the record for `work` to the publisher; its acknowledgement acknowledges the offset."""
        ticket = work.ticket
        if isinstance(outcome, Rejected):
            record = dead_letter_record(outcome, max_record_bytes=self._max_dead_letter_bytes)
            on_ack: Callable[[], None] = _DeadLettered(self, ticket, outcome.reason)
            topic, kind = self._dead_letter_topic, "dead_letter"
        else:
            assert work.message is not None  # only decoded messages reach inference
            record = output_record(work.message, outcome, self.identity, scores=self._scores,
                                   decimals=self._decimals, processing_ms=(time.monotonic() - work.received) * 1000)
            on_ack = _Published(self, ticket, work.envelope.source.timestamp_ms, outcome)
            topic, kind = self._output_topic, "output"
        self.sender.send(Outgoing(topic, kind, record, on_ack, wanted=lambda: self._is_current(ticket),
                                  shrink=shrink_dead_letter if kind == "dead_letter" else None))

    def close(self, timeout: float) -> int:
        """Flush what was handed over; returns how many records are still unacknowledged."""
        return self.sender.close(timeout)


class _Published:
    """A result was acknowledged: the offset, then latency and label metrics."""

    __slots__ = ("outputs", "result", "ticket", "ts_ms")

    def __init__(self, outputs: Outputs, ticket: Ticket, ts_ms: int | None, result: Result) -> None:
        self.outputs, self.ticket, self.ts_ms, self.result = outputs, ticket, ts_ms, result

    def __call__(self) -> None:
        if not self.outputs._acknowledge(self.ticket):
            return  # its partition went away meanwhile: the new owner redoes and counts it
        m = self.outputs.metrics
        m.published.inc()
        if self.ts_ms is not None:
            m.latency.observe(max(0.0, time.time() - self.ts_ms / 1000))
        if self.result.no_label:
            m.no_label.inc()
        for label in self.result.labels:
            m.labels.labels(label=label).inc()


class _DeadLettered:
    __slots__ = ("outputs", "reason", "ticket")

    def __init__(self, outputs: Outputs, ticket: Ticket, reason: str) -> None:
        self.outputs, self.ticket, self.reason = outputs, ticket, reason

    def __call__(self) -> None:
        if self.outputs._acknowledge(self.ticket):
            self.outputs.metrics.dead_lettered.labels(reason=self.reason).inc()


def produce_failure_reporter(metrics: Metrics, health: Health) -> Callable[[Outgoing, str], None]:
    """For the publisher's on_failure: count the failed attempt and show it on /readyz."""

    def report(item: Outgoing, error: str) -> None:
        metrics.produce_failures.labels(topic_kind=item.kind).inc()
        health.output_error = error[:200]

    return report
