"""The consumer loop: the only code that touches the Kafka consumer. It creates the consumer,
polls, registers each message with the offset tracker and submits it downstream; handles
assignment, revocation and loss; pauses at the in-flight bound and resumes at half of it; commits
what is acknowledged (and, through the commit ledger, knows what the broker really took); closes
the consumer.

    poll -> tracker.register (a redelivery is skipped) -> downstream.submit
    assign -> track | revoke -> drain, commit, forget | lost -> forget, commit nothing
    every loop: back-pressure; every commit interval: commit what is due (worker.stream.commits)

exactly_once (`transactions` given): a commit is the transaction's (worker.stream.transactions):
its records and every partition's commit point together, in the consumer's group. When it aborts,
every partition is rewound to its last committed offset (the tracker voids its work, the consumer
seeks back); a lost partition aborts the open transaction.

Polling never waits for inference, so a long batch cannot exceed max.poll.interval.ms. The
consumer (through a factory) and what is downstream are passed in: tests drive the loop in-process
with small fakes. A fatal consumer error ends `run`; `fatal` says which.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, overload

from confluent_kafka import KafkaError, KafkaException, Message, TopicPartition

from worker.observe.health import Health
from worker.observe.metrics import Metrics
from worker.stream.commits import CommitLedger
from worker.stream.missing_topics import MissingTopics
from worker.stream.offsets import OffsetTracker
from worker.stream.types import Envelope, PartitionId, Source, Ticket

log = logging.getLogger(__name__)

POLL_BATCH = 500  # messages taken from the consumer's queue per loop turn
POLL_WAIT_S = 0.05  # poll() returns as soon as one message is there; this is the idle wait
WAKE_TIMEOUT_S = 0.5  # the metadata request that wakes a resumed fetch (see _wake_fetch)

Rebalance = Callable[[Any, list[TopicPartition]], None]
OnCommit = Callable[[KafkaError | None, list[TopicPartition]], None]


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

    def seek(self, partition: TopicPartition) -> None: ...  # exactly_once only

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> object: ...  # wakes a resumed fetch

    def consumer_group_metadata(self) -> object: ...  # exactly_once only


class Transactions(Protocol):
    """exactly_once: the transaction control (worker.stream.transactions.TransactionalPublisher)."""

    fatal: KafkaError | None  # fenced by a newer instance with the same transactional id

    def commit(self, due: Callable[[], dict[PartitionId, int]], group_metadata: object,
               on_abort: Callable[[], None]) -> dict[PartitionId, int] | None: ...

    def abort(self, on_abort: Callable[[], None]) -> None: ...


class Downstream(Protocol):
    """Where consumed messages go (worker.stream.processing.Processing)."""

    def submit(self, ticket: Ticket, envelope: Envelope) -> None: ...

    def forget(self, tp: PartitionId) -> None: ...


@dataclass(frozen=True)
class LoopOptions:
    input_topic: str
    max_in_flight: int  # consumed but unacknowledged messages; at this bound the partitions pause
    commit_interval_s: float
    revoke_timeout_s: float  # longest a revoke waits for the partitions' in-flight work


class ConsumerLoop:
    def __init__(self, make_consumer: Callable[[OnCommit], KafkaConsumer], downstream: Downstream,
                 tracker: OffsetTracker, options: LoopOptions, metrics: Metrics, health: Health, *,
                 transactions: Transactions | None = None, missing_topics: MissingTopics | None = None) -> None:
        """`make_consumer(on_commit)`: the consumer, with `on_commit` as its commit callback; called
        by `start`. The loop writes the health facts it owns: the poll beat and group membership.
        `transactions`: exactly_once's commits (None: at-least-once, the consumer commits)."""
        self._make_consumer = make_consumer
        self._consumer: KafkaConsumer | None = None
        self.downstream = downstream
        self.tracker = tracker
        self.options = options
        self.metrics = metrics
        self.health = health
        self.ledger = CommitLedger()
        self.fatal: KafkaError | None = None  # the fatal consumer error that ended `run`
        self._paused: set[PartitionId] = set()
        self._redelivering: set[PartitionId] = set()  # partitions inside a run of redelivered messages
        self._last_commit = time.monotonic()
        self._close_deadline: float | None = None  # set by close: the revoke it triggers waits at most until then
        self.transactions = transactions
        self._seeks: dict[PartitionId, int] = {}  # exactly_once: rewinds whose seek is still to be done
        # "input topic X does not exist yet" told once (librdkafka's repeats absorbed), readiness red till it does
        self.missing_topics = missing_topics or MissingTopics(options.input_topic, "the brokers", health)
        self._rewound: list[PartitionId] = []  # exactly_once: rewound under the transaction's lock, to forget after

    @property
    def consumer(self) -> KafkaConsumer:
        if self._consumer is None:
            raise RuntimeError("the consumer loop is not started")
        return self._consumer

    # ---- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        """Create the consumer and join the group (assignment comes with the next polls)."""
        self._consumer = self._make_consumer(self._on_commit)
        self._consumer.subscribe([self.options.input_topic], on_assign=self._on_assign,
                                 on_revoke=self._on_revoke, on_lost=self._on_lost)

    def run(self, stop: threading.Event) -> None:
        """Poll until `stop` is set or a fatal consumer error (`fatal`)."""
        while not stop.is_set() and self.fatal is None:
            self.run_once()

    def run_once(self, wait_s: float = POLL_WAIT_S) -> None:
        try:
            first = self.consumer.poll(wait_s)
            if first is not None:  # then drain what is already queued, without waiting
                self._take(first)
                for msg in self.consumer.consume(num_messages=POLL_BATCH - 1, timeout=0):
                    self._take(msg)
        except KafkaException as exc:
            self._client_error(exc.args[0] if exc.args and isinstance(exc.args[0], KafkaError) else None, exc)
        self.health.beat()
        if self._seeks:
            self._seek()
        self._backpressure()
        if time.monotonic() - self._last_commit >= self.options.commit_interval_s:
            self.commit()

    def close(self, timeout: float) -> bool:
        """Commit what is due, synchronously, then close the consumer (leaving the group). True when
        every acknowledged offset is committed. (`timeout` is librdkafka's to keep: a synchronous
        commit waits for the broker's answer.)"""
        if self._consumer is None:
            return True
        # Closing revokes the partitions: their in-flight work already had the stream's drain
        # window, so the revoke waits only for what is left of `timeout`, not a revoke's own.
        self._close_deadline = time.monotonic() + timeout
        committed = self.commit(asynchronous=False)
        try:
            self._consumer.close()
        except (KafkaException, RuntimeError) as exc:  # fatal, or closed already
            log.warning("closing the consumer: %s", exc)
        self._consumer = None
        return committed

    def _client_error(self, err: KafkaError | None, exc: object) -> None:
        if err is not None and err.fatal():
            self.fatal = err
            log.error("kafka consumer: fatal error, stopping: %s", err.str())
        else:
            log.warning("kafka consumer: %s", exc)

    # ---- consume ----------------------------------------------------------------------------
    def _take(self, msg: Message) -> None:
        err = msg.error()
        if err is not None:
            if err.code() != KafkaError._PARTITION_EOF and not self.missing_topics.consumer_error(err):
                self._client_error(err, err)
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
        self.downstream.submit(ticket, envelope)

    # ---- rebalance --------------------------------------------------------------------------
    def _on_assign(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self.tracker.assign((p.topic, p.partition))
        self.metrics.rebalances.labels(kind="assign").inc()
        self.metrics.assigned.set(len(self.tracker.assigned()))
        self.health.joined = True
        self.missing_topics.assigned(partitions)
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        """Give the partitions' in-flight work a moment to finish, commit it, then let go."""
        tps = [(p.topic, p.partition) for p in partitions]
        self.metrics.rebalances.labels(kind="revoke").inc()
        timeout = self.options.revoke_timeout_s
        if self._close_deadline is not None:
            timeout = min(timeout, max(0.0, self._close_deadline - time.monotonic()))
        if not self.tracker.wait_drained(tps, timeout):
            log.warning("revoke: in-flight work of %s not done in %.0fs; abandoning it (it will be redone "
                        "by the next owner)", _names(partitions), timeout)
        self.commit(tps, asynchronous=False)
        for tp in tps:
            self._let_go(tp)
        self.metrics.assigned.set(len(self.tracker.assigned()))
        log.info("revoked %s", _names(partitions))

    def _on_lost(self, _consumer: object, partitions: list[TopicPartition]) -> None:
        """Another member may own them already: commit nothing, drop the work (exactly_once: abort
        the open transaction, which holds some of it, and rewind the other partitions)."""
        self.metrics.rebalances.labels(kind="lost").inc()
        for p in partitions:
            dropped = self._let_go((p.topic, p.partition))
            log.warning("lost %s[%d]: committing nothing for it, %d unfinished dropped", p.topic, p.partition,
                        dropped)
        if self.transactions is not None:
            self.transactions.abort(self._rewind)
            self._after_rewind()
        self.metrics.assigned.set(len(self.tracker.assigned()))

    def _let_go(self, tp: PartitionId) -> int:
        self.downstream.forget(tp)
        self._paused.discard(tp)
        self._seeks.pop(tp, None)
        self.ledger.forget(tp)
        return self.tracker.forget(tp)

    # ---- exactly_once -----------------------------------------------------------------------
    def _commit_transaction(self) -> bool:
        """Commit the open transaction with every partition's commit point (all of them: it holds
        records of every partition). False when it aborted (the partitions are rewound)."""
        assert self.transactions is not None

        def due() -> dict[PartitionId, int]:
            return self.ledger.due(self.tracker.commit_points(), synchronous=True)

        try:
            metadata = self.consumer.consumer_group_metadata()
        except KafkaException as exc:  # not in the group (any more): what was done is redone by the owner
            log.warning("no group metadata for the transaction: %s", exc)
            self.transactions.abort(self._rewind)
            self._after_rewind()
            return False
        committed = self.transactions.commit(due, metadata, self._rewind)
        if self.transactions.fatal is not None and self.fatal is None:
            self.fatal = self.transactions.fatal
        if committed is None:
            self._after_rewind()
            self.metrics.commit_failures.inc()
            return False
        for tp, offset in committed.items():
            self.ledger.confirmed(tp, offset)
        if committed:
            self.metrics.commits.inc()
        return True

    def _rewind(self) -> None:
        """The transaction aborted (called under its lock, so no record of the void work enters a
        later transaction): every partition's work since its last committed offset is void; it is
        read again from there. Only the tracker here: the release's lock may be held by a thread
        waiting for the transaction's (`_after_rewind` does the rest)."""
        for tp in self.tracker.assigned():
            start = self.tracker.rewind(tp, self.ledger.confirmed_offset(tp))
            if start is not None:
                self._seeks[tp] = start
                self._rewound.append(tp)

    def _after_rewind(self) -> None:
        """Drop what waits for release of the void work, and seek back (before the next poll)."""
        rewound, self._rewound = self._rewound, []
        for tp in rewound:
            self.downstream.forget(tp)
        self._seek()

    def _seek(self) -> None:
        for (topic, partition), offset in list(self._seeks.items()):
            try:
                self.consumer.seek(TopicPartition(topic, partition, offset))
            except KafkaException as exc:  # tried again at the next loop turn
                log.warning("seek of %s[%d] to %d failed, retrying: %s", topic, partition, offset, exc)
                continue
            del self._seeks[(topic, partition)]
            log.info("re-reading %s[%d] from offset %d", topic, partition, offset)

    # ---- commit and back-pressure -----------------------------------------------------------
    def commit(self, tps: list[PartitionId] | None = None, *, asynchronous: bool = True) -> bool:
        """Commit each partition's first unacknowledged offset where it is due: not yet confirmed by
        the broker (nor, for an asynchronous commit, already on its way). False when a synchronous
        commit, or the handing over of an asynchronous one, failed."""
        self._last_commit = time.monotonic()
        if self.transactions is not None:
            return self._commit_transaction()
        due = self.ledger.due(self.tracker.commit_points(tps), synchronous=not asynchronous)
        if not due:
            return True
        offsets = [TopicPartition(t, p, off) for (t, p), off in due.items()]
        try:
            if asynchronous:
                self.consumer.commit(offsets=offsets, asynchronous=True)
                self.ledger.requested(due)  # its outcome comes through _on_commit
                return True
            result = self.consumer.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else exc
            if isinstance(err, KafkaError) and err.code() == KafkaError._NO_OFFSET:
                return True
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed: %s", err)
            return False
        failed = [p for p in result if p.error is not None]
        for p in result:
            if p.error is None:
                self.ledger.confirmed((p.topic, p.partition), p.offset)
        if failed:
            log.warning("offset commit failed for %s: %s", _names(failed), failed[0].error)
        return not failed

    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        """The consumer's on_commit: a commit's outcome, served inside poll. Counted, and settled in
        the ledger (a failure leaves the partitions due)."""
        if err is not None or any(p.error is not None for p in partitions):
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed: %s", err or [str(p.error) for p in partitions if p.error])
        else:
            self.metrics.commits.inc()
        self.ledger.reported(err, partitions)

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
            self._wake_fetch()
            log.debug("resumed %d partitions: %d in flight", len(self._paused), in_flight)
            self._paused = set()
        self.metrics.paused.set(len(self._paused))

    def _wake_fetch(self) -> None:
        """librdkafka notices a resume only at its broker thread's next wakeup, up to a second later,
        fetching nothing meanwhile: a backlog stalled ~0.7 s at every resume (the int8 default drained
        at 0.71x the engine in memory, 0.88-0.91x when the bound was never reached). A metadata
        request wakes it: the fetch restarts within ~10 ms. Read-only: no offset moves."""
        try:
            self.consumer.list_topics(self.options.input_topic, timeout=WAKE_TIMEOUT_S)
        except KafkaException as exc:  # brokers away: the resume still happens at the next wakeup
            log.debug("metadata request to wake the resumed fetch failed: %s", exc)

    def describe(self) -> dict[str, object]:
        """The consumer side's state, for the SIGUSR1 dump."""
        return {"paused": sorted(self._paused), "in_flight": self.tracker.unfinished(),
                "offsets": self.tracker.describe(), "commits": self.ledger.describe()}


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "(none)"
