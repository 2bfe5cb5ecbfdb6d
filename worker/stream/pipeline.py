"""The loop: poll, decode, batch, hand to the engine, publish, commit.

Threads: the main thread polls, decodes, dead-letters, handles rebalances, applies back-pressure
and commits; the inference thread takes micro-batches and publishes results in input order; the
publisher thread serves delivery callbacks and retries. Polling never waits for inference, so a
long batch cannot exceed max.poll.interval.ms.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Protocol

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from worker.config import Settings
from worker.engine.result import ModelIdentity, Result, Timing
from worker.observe.health import Health
from worker.observe.metrics import Metrics
from worker.stream.decode import ChatMessage, Envelope, Rejected, Source, decode
from worker.stream.kafka_conf import consumer_conf, producer_conf
from worker.stream.lag import parse_lag
from worker.stream.microbatch import MicroBatcher
from worker.stream.offsets import OffsetTracker, Ticket
from worker.stream.publish import Outgoing, Publisher
from worker.stream.records import dead_letter_record, output_record
from worker.stream.release import OrderedRelease

log = logging.getLogger(__name__)

POLL_BATCH = 500
REVOKE_DRAIN_S = 10.0


class Classifier(Protocol):
    identity: ModelIdentity

    def classify(self, texts: list[str], timing: Timing | None = None) -> list[Result]: ...

    def classify_stream(self, texts: list[str], timing: Timing | None = None,
                        ) -> Iterator[list[tuple[int, Result]]]: ...


@dataclass(frozen=True)
class Work:
    ticket: Ticket
    message: ChatMessage
    received: float  # time.monotonic() at consume


class Pipeline:
    def __init__(self, settings: Settings, classifier: Classifier, metrics: Metrics, health: Health,
                 stop_event: threading.Event | None = None) -> None:
        self.settings = settings
        self.classifier = classifier
        self.metrics = metrics
        self.health = health
        self.tracker = OffsetTracker()
        self.batcher: MicroBatcher[Work] = MicroBatcher(
            settings.batching.max_batch_size, settings.batching.max_wait_ms / 1000
        )
        self.stop_event = stop_event if stop_event is not None else threading.Event()
        self.release: OrderedRelease[Work, Result | None] = OrderedRelease(
            lambda w: w.ticket, self._publish, self.tracker.is_current)
        self._inference_done = threading.Event()
        self._inference_running = 0
        self._inference_lock = threading.Lock()
        self._counts = {"taken": 0, "current": 0, "results": 0}  # messages through inference, for describe()
        self._paused: set[tuple[str, int]] = set()
        self._redelivering: set[tuple[str, int]] = set()  # partitions inside a run of redelivered messages
        self._last_committed: dict[tuple[str, int], int] = {}
        self._last_commit = time.monotonic()
        k = settings.kafka
        self.consumer = Consumer(consumer_conf(k, on_commit=self._on_commit, on_stats=self._on_stats))
        self.publisher = Publisher(producer_conf(k), self.tracker, on_failure=self._on_produce_failure)

    # ---- callbacks -------------------------------------------------------------------------
    def _on_commit(self, err: KafkaError | None, partitions: list[TopicPartition]) -> None:
        failed = err is not None or any(p.error is not None for p in partitions)
        if failed:
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed: %s", err or [str(p.error) for p in partitions if p.error])
        else:
            self.metrics.commits.inc()

    def _on_stats(self, stats_json: str) -> None:
        for (topic, partition), lag in parse_lag(stats_json, self.settings.kafka.input_topic).items():
            self.metrics.lag.labels(topic=topic, partition=str(partition)).set(lag)

    def _on_produce_failure(self, item: Outgoing, error: str) -> None:
        self.metrics.produce_failures.labels(topic_kind=item.kind).inc()
        self.health.output_error = error[:200]

    def _on_assign(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for p in partitions:
            self.tracker.assign((p.topic, p.partition))
        self.metrics.rebalances.labels(kind="assign").inc()
        self.metrics.assigned.set(len(self.tracker.assigned()))
        self.health.joined = True
        log.info("assigned %s", _names(partitions))

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self.metrics.rebalances.labels(kind="revoke").inc()
        timeout = min(REVOKE_DRAIN_S, self.settings.shutdown_timeout_s)
        if not self.tracker.wait_drained(tps, timeout):
            log.warning("revoke: in-flight work of %s not done in %.0fs; abandoning it (it will be redone "
                        "by the next owner)", _names(partitions), timeout)
        self._commit(tps, asynchronous=False)
        for tp in tps:
            self.release.forget(tp)
            self.tracker.forget(tp)
            self._paused.discard(tp)
            self._last_committed.pop(tp, None)
        self.metrics.assigned.set(len(self.tracker.assigned()))
        log.info("revoked %s", _names(partitions))

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.metrics.rebalances.labels(kind="lost").inc()
        for p in partitions:
            tp = (p.topic, p.partition)
            self.release.forget(tp)
            dropped = self.tracker.forget(tp)
            self._paused.discard(tp)
            self._last_committed.pop(tp, None)
            log.warning("lost %s[%d]: committing nothing for it, %d unfinished dropped", p.topic, p.partition,
                        dropped)
        self.metrics.assigned.set(len(self.tracker.assigned()))

    # ---- commit and back-pressure -----------------------------------------------------------
    def _commit(self, tps: list[tuple[str, int]] | None = None, *, asynchronous: bool = True) -> None:
        points = self.tracker.commit_points(tps)
        todo = [TopicPartition(t, p, off) for (t, p), off in points.items()
                if self._last_committed.get((t, p)) != off]
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
        limit = self.settings.batching.max_in_flight
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

    # ---- consume and decode -----------------------------------------------------------------
    def _handle(self, msg: Message) -> None:
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
        if self._redelivering:
            self._redelivering.discard(tp)
        self.metrics.consumed.inc()
        ts_type, ts = msg.timestamp()
        envelope = Envelope(
            source=Source(topic, partition, offset, ts if ts_type != 0 else None),
            key=msg.key(),
            headers=list(msg.headers() or []),  # type: ignore[arg-type]
            value=msg.value(),
        )
        i = self.settings.input
        decoded = decode(envelope, text_field=i.text_field, id_field=i.id_field, max_value_bytes=i.max_value_bytes)
        if isinstance(decoded, Rejected):
            self._dead_letter(ticket, decoded)
        else:
            work = Work(ticket, decoded, time.monotonic())
            self.release.expect(work)
            self.batcher.put(work)

    def _dead_letter(self, ticket: Ticket, rejected: Rejected) -> None:
        reason = rejected.reason

        def acked() -> None:
            self.metrics.dead_lettered.labels(reason=reason).inc()

        record = dead_letter_record(rejected, max_value_bytes=max(self.settings.input.max_value_bytes, 65_536))
        self.publisher.send(Outgoing(self.settings.kafka.dead_letter_topic, "dead_letter", ticket, record, acked))

    # ---- inference --------------------------------------------------------------------------
    def _inference_loop(self) -> None:
        try:
            while True:
                batch = self.batcher.next_batch(idle_timeout_s=0.1)
                if not batch:
                    if self.stop_event.is_set() and self.batcher.qsize() == 0:
                        return
                    continue
                self._infer(batch)
        finally:
            with self._inference_lock:
                self._inference_running -= 1
                if self._inference_running == 0:
                    self._inference_done.set()

    def _infer(self, batch: list[Work]) -> None:
        """Classify a micro-batch; each model call's results go to the release as they are ready
        (it publishes them in partition order, whichever micro-batch or call finishes first)."""
        work = [w for w in batch if self.tracker.is_current(w.ticket)]
        with self._inference_lock:
            self._counts["taken"] += len(batch)
            self._counts["current"] += len(work)
        if not work:
            return
        timing = Timing()
        finished: set[int] = set()
        try:
            for chunk in self.classifier.classify_stream([w.message.text for w in work], timing):
                for i, result in chunk:
                    finished.add(i)
                    self.release.done(work[i], result)
                with self._inference_lock:
                    self._counts["results"] += len(chunk)
        except Exception:
            todo = [i for i in range(len(work)) if i not in finished]
            log.exception("inference failed for %d of a batch of %d; retrying them one by one", len(todo), len(work))
            for i in todo:
                self.release.done(work[i], self._classify_one(work[i]))
        m = self.metrics
        m.batch_size.observe(len(work))
        m.inference_seconds.labels(stage="tokenize").observe(timing.tokenize_s)
        m.inference_seconds.labels(stage="model").observe(timing.model_s)
        if timing.cache_hits:
            m.cache_hits.inc(timing.cache_hits)

    def _publish(self, w: Work, result: Result | None) -> None:
        if result is None:
            return  # dead-lettered by _classify_one
        record = output_record(w.message, result, self.classifier.identity, scores=self.settings.output.scores,
                               processing_ms=(time.monotonic() - w.received) * 1000)
        self.publisher.send(Outgoing(self.settings.kafka.output_topic, "output", w.ticket, record,
                                     _Acked(self.metrics, w.message.envelope.source.timestamp_ms, result)))

    def _classify_one(self, w: Work) -> Result | None:
        try:
            return self.classifier.classify([w.message.text])[0]
        except Exception as exc:
            self._dead_letter(w.ticket, Rejected(w.message.envelope, "inference_error",
                                                 f"{type(exc).__name__}: {exc}"))
            return None

    def describe(self) -> dict[str, object]:
        """Where every unfinished message is: for `kill -USR1 <pid>` on a worker that seems stuck."""
        with self._inference_lock:
            counts = dict(self._counts)
        return {"queued_for_inference": self.batcher.qsize(), "inference": counts, "paused": sorted(self._paused),
                "in_flight": self.tracker.unfinished(), "offsets": self.tracker.describe(),
                "release": self.release.describe(), "publisher": self.publisher.describe()}

    # ---- run --------------------------------------------------------------------------------
    def run(self) -> int:
        """Consume until stop_event is set; then drain, flush, commit and close. Returns 0."""
        k = self.settings.kafka
        self.publisher.start()
        # Micro-batches side by side: while one is tokenised, finishing its last model call or
        # publishing, the other keeps the model threads busy.
        self._inference_running = self.settings.batching.concurrent_batches
        for n in range(self._inference_running):
            inference = threading.Thread(target=self._inference_loop, name=f"inference-{n}", daemon=True)
            inference.start()
            self.health.watch(inference)
        self.health.watch(self.publisher.thread)
        self.consumer.subscribe([k.input_topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)
        log.info("consuming %s -> %s (dead letters: %s), group %s", k.input_topic, k.output_topic,
                 k.dead_letter_topic, k.group_id)
        commit_every = k.commit_interval_ms / 1000
        while not self.stop_event.is_set():
            # poll() returns as soon as one message is there (consume() would wait out its timeout
            # for a full batch: up to 50 ms on a quiet stream); then drain what is already queued.
            first = self.consumer.poll(0.05)
            if first is not None:
                self._handle(first)
                for msg in self.consumer.consume(num_messages=POLL_BATCH - 1, timeout=0):
                    self._handle(msg)
            self.health.beat()
            self.health.output_ok = self.publisher.healthy()
            self._backpressure()
            if time.monotonic() - self._last_commit >= commit_every:
                self._commit()
                self._last_commit = time.monotonic()
        return self._shutdown()

    def _shutdown(self) -> int:
        deadline = time.monotonic() + self.settings.shutdown_timeout_s
        self.health.stopping = True
        log.info("stopping: draining %d in-flight messages", self.tracker.unfinished())
        drained = self.tracker.wait_drained(None, max(0.0, deadline - time.monotonic() - 1.0))
        self._inference_done.wait(timeout=max(0.0, deadline - time.monotonic() - 1.0))
        left = self.publisher.close(max(0.1, deadline - time.monotonic() - 0.5))
        self._commit(asynchronous=False)
        if not drained or left:
            log.warning("stopped with %d messages unfinished; they were not committed and will be redone",
                        self.tracker.unfinished())
        self.consumer.close()
        log.info("stopped")
        return 0


class _Acked:
    """Runs when a result is acknowledged: latency and label metrics."""

    __slots__ = ("metrics", "result", "ts_ms")

    def __init__(self, metrics: Metrics, ts_ms: int | None, result: Result) -> None:
        self.metrics, self.ts_ms, self.result = metrics, ts_ms, result

    def __call__(self) -> None:
        m = self.metrics
        m.published.inc()
        if self.ts_ms is not None:
            m.latency.observe(max(0.0, time.time() - self.ts_ms / 1000))
        if self.result.no_label:
            m.no_label.inc()
        for label in self.result.labels:
            m.labels.labels(label=label).inc()


def _names(partitions: list[TopicPartition]) -> str:
    return ", ".join(f"{p.topic}[{p.partition}]" for p in partitions) or "(none)"

