"""The consumer loop: the only code that touches the Kafka consumer. It polls, registers each
message with the offset tracker and submits it to processing; handles assignment, revocation and
loss; pauses at the in-flight bound and resumes at half of it; commits what is acknowledged.

    poll -> tracker.register (a redelivery is skipped) -> processing.submit
    assign -> track | revoke -> drain, commit, forget | lost -> forget, commit nothing
    every loop: back-pressure; every commit interval: commit the tracker's commit points

Polling never waits for inference, so a long batch cannot exceed max.poll.interval.ms. The
consumer and processing are passed in: tests drive the loop in-process with small fakes.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, overload

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from worker.config import Settings
from worker.observe.health import Health
from worker.observe.metrics import Metrics
from worker.stream.decode import Envelope, Source
from worker.stream.offsets import OffsetTracker, PartitionId, Ticket

log = logging.getLogger(__name__)

POLL_BATCH = 500  # messages taken from the consumer's queue per loop turn
POLL_WAIT_S = 0.05  # poll() returns as soon as one message is there; this is the idle wait
REVOKE_DRAIN_S = 10.0  # longest a revoke waits for the partition's in-flight work

Rebalance = Callable[[Any, list[TopicPartition]], None]


class KafkaConsumer(Protocol):
    """The part of confluent_kafka.Consumer the loop uses."""

    def subscribe(self, topics: list[str], *, on_assign: Rebalance, on_revoke: Rebalance,
                  on_lost: Rebalance) -> None: ...

    def poll(self, timeout: float) -> Message | None: ...

    def consume(self, num_messages: int, timeout: float) -> list[Message]: ...

    @overload
    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[True] = ...) -> None: ...

    @overload
    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[False]) -> list[TopicPartition]: ...

    def pause(self, partitions: list[TopicPartition]) -> None: ...

    def resume(self, partitions: list[TopicPartition]) -> None: ...

    def close(self) -> None: ...


class Processing(Protocol):
    """Where consumed messages go (worker.stream.processing.Processing)."""

    def submit(self, ticket: Ticket, envelope: Envelope) -> None: ...

    def forget(self, tp: PartitionId) -> None: ...

    def join(self, timeout: float) -> int: ...

    def describe(self) -> dict[str, object]: ...


@dataclass(frozen=True)
class LoopOptions:
    input_topic: str
    max_in_flight: int
    commit_interval_s: float
    shutdown_timeout_s: float

    @classmethod
    def from_settings(cls, settings: Settings) -> LoopOptions:
        k = settings.kafka
        return cls(k.input_topic, settings.batching.max_in_flight, k.commit_interval_ms / 1000,
                   settings.shutdown_timeout_s)


class ConsumerLoop:
    def __init__(self, consumer: KafkaConsumer, processing: Processing, tracker: OffsetTracker,
                 options: LoopOptions, metrics: Metrics, health: Health) -> None:
        self.consumer = consumer
        self.processing = processing
        self.tracker = tracker
        self.options = options
        self.metrics = metrics
        self.health = health
        self._paused: set[PartitionId] = set()
        self._redelivering: set[PartitionId] = set()  # partitions inside a run of redelivered messages
        self._last_committed: dict[PartitionId, int] = {}
        self._last_commit = time.monotonic()

    # ---- run --------------------------------------------------------------------------------
    def subscribe(self) -> None:
        self.consumer.subscribe([self.options.input_topic], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_lost)

    def run(self, stop: threading.Event) -> int:
        """Consume until `stop` is set; then drain, flush, commit and close. Returns 0."""
        self.subscribe()
        while not stop.is_set():
            self.run_once()
        return self.shutdown()

    def run_once(self, wait_s: float = POLL_WAIT_S) -> None:
        first = self.consumer.poll(wait_s)
        if first is not None:  # then drain what is already queued, without waiting
            for msg in [first, *self.consumer.consume(num_messages=POLL_BATCH - 1, timeout=0)]:
                self._take(msg)
        self.health.beat()
        self._backpressure()
        if time.monotonic() - self._last_commit >= self.options.commit_interval_s:
            self.commit()

    def shutdown(self) -> int:
        deadline = time.monotonic() + self.options.shutdown_timeout_s
        self.health.stopping = True
        log.info("stopping: draining %d in-flight messages", self.tracker.unfinished())
        drained = self.tracker.wait_drained(None, max(0.0, deadline - time.monotonic() - 1.0))
        left = self.processing.join(max(0.1, deadline - time.monotonic() - 0.5))
        self.commit(asynchronous=False)
        if not drained or left:
            log.warning("stopped with %d messages unfinished; they were not committed and will be redone",
                        self.tracker.unfinished())
        self.consumer.close()
        log.info("stopped")
        return 0

    # ---- consume ----------------------------------------------------------------------------
    def _take(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF:
                log.warning("consumer error: %s", err)
            return
        topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
        if topic is None or partition is None or offset is None:
            return
        tp = (topic, partition)
        ticket = self.tracker.register(tp, offset)
        if ticket is None:  # handed out again by the consumer: its first copy is in flight or done
            self.metrics.redelivered.inc()
            if tp not in self._redelivering:  # one line per run of redelivered messages, not one each
                self._redelivering.add(tp)
                log.warning("skipping redelivered messages of %s[%d] (from offset %d): already processed or in "
                            "flight", topic, partition, offset)
            return
        self._redelivering.discard(tp)
        self.metrics.consumed.inc()
        ts_type, ts = msg.timestamp()
        envelope = Envelope(source=Source(topic, partition, offset, ts if ts_type != 0 else None), key=msg.key(),
                            headers=list(msg.headers() or []), value=msg.value())  # type: ignore[arg-type]
        self.processing.submit(ticket, envelope)

    # ---- rebalance --------------------------------------------------------------------------
    def _on_assign(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self.tracker.assign((p.topic, p.partition))
        self.metrics.rebalances.labels(kind="assign").inc()
        self.metrics.assigned.set(len(self.tracker.assigned()))
        self.health.joined = True
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        """Give the partitions' in-flight work a moment to finish, commit it, then let go."""
        tps = [(p.topic, p.partition) for p in partitions]
        self.metrics.rebalances.labels(kind="revoke").inc()
        timeout = min(REVOKE_DRAIN_S, self.options.shutdown_timeout_s)
        if not self.tracker.wait_drained(tps, timeout):
            log.warning("revoke: in-flight work of %s not done in %.0fs; abandoning it (it will be redone "
                        "by the next owner)", _names(partitions), timeout)
        self.commit(tps, asynchronous=False)
        for tp in tps:
            self._let_go(tp)
        self.metrics.assigned.set(len(self.tracker.assigned()))
        log.info("revoked %s", _names(partitions))

    def _on_lost(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        """Another member may own them already: commit nothing, drop the work."""
        self.metrics.rebalances.labels(kind="lost").inc()
        for p in partitions:
            dropped = self._let_go((p.topic, p.partition))
            log.warning("lost %s[%d]: committing nothing for it, %d unfinished dropped", p.topic, p.partition,
                        dropped)
        self.metrics.assigned.set(len(self.tracker.assigned()))

    def _let_go(self, tp: PartitionId) -> int:
        self.processing.forget(tp)
        self._paused.discard(tp)
        self._last_committed.pop(tp, None)
        return self.tracker.forget(tp)

    # ---- commit and back-pressure -----------------------------------------------------------
    def commit(self, tps: list[PartitionId] | None = None, *, asynchronous: bool = True) -> None:
        """Commit each partition's first unacknowledged offset, where it moved since the last commit."""
        self._last_commit = time.monotonic()
        points = self.tracker.commit_points(tps)
        todo = [TopicPartition(t, p, off) for (t, p), off in points.items() if self._last_committed.get((t, p)) != off]
        if not todo:
            return
        try:
            if asynchronous:
                self.consumer.commit(offsets=todo, asynchronous=True)
            else:
                self.consumer.commit(offsets=todo, asynchronous=False)
            for tp in todo:
                self._last_committed[(tp.topic, tp.partition)] = tp.offset
        except KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            if isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET:
                return
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed: %s", err)

    def _backpressure(self) -> None:
        limit = self.options.max_in_flight
        in_flight = self.tracker.unfinished()
        self.metrics.in_flight.set(in_flight)
        if in_flight >= limit and not self._paused:
            tps = self.tracker.assigned()
            if tps:
                self.consumer.pause([TopicPartition(t, p) for t, p in tps])
                self._paused = set(tps)
                log.debug("paused %d partitions: %d messages in flight (limit %d)", len(tps), in_flight, limit)
        elif self._paused and in_flight <= limit // 2:
            for t, p in self._paused:
                try:
                    self.consumer.resume([TopicPartition(t, p)])
                except KafkaException as exc:  # that partition went away meanwhile
                    log.warning("resume of %s[%d] failed: %s", t, p, exc)
            log.debug("resumed %d partitions: %d in flight", len(self._paused), in_flight)
            self._paused = set()
        self.metrics.paused.set(len(self._paused))

    def describe(self) -> dict[str, object]:
        """Where every unfinished message is: for `kill -USR1 <pid>` on a worker that seems stuck."""
        return {"paused": sorted(self._paused), "in_flight": self.tracker.unfinished(),
                "offsets": self.tracker.describe(), **self.processing.describe()}


def commit_reporter(metrics: Metrics) -> Callable[[KafkaError | None, list[TopicPartition]], None]:
    """For the consumer's on_commit: count commits and failures."""

    def report(err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        if err is not None or any(p.error is not None for p in partitions):
            metrics.commit_failures.inc()
            log.warning("offset commit failed: %s", err or [str(p.error) for p in partitions if p.error])
        else:
            metrics.commits.inc()

    return report


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "(none)"
