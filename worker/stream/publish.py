"""Records out to Kafka: an idempotent producer (acks=all), a delivery report per record that runs
its `on_ack`, retries with backoff for transient failures (never a dead letter for those), and a
fresh producer when the old one cannot recover. Knows nothing of offsets or of what a record means.

`send` is thread-safe (librdkafka's produce is); delivery reports and retries run on the publisher
thread."""

from __future__ import annotations

import contextlib
import heapq
import itertools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from worker.stream.kafka_conf import idempotent_producer_conf
from worker.stream.records import Record

log = logging.getLogger(__name__)

BACKOFF_START_S = 0.1
BACKOFF_MAX_S = 5.0
# A producer that has failed continuously this long is replaced by a fresh one (new producer id):
# after a broker lost its state (a restart of a memory-only broker, say), or a fatal idempotence
# error, the old one may never succeed again. Its queued records are purged and retried.
RESET_AFTER_S = 10.0
# The record is larger than the producer (message.max.bytes) or the broker accepts.
_SIZE_REFUSED = (KafkaError.MSG_SIZE_TOO_LARGE,)


def _always() -> bool:
    return True


@dataclass
class Outgoing:
    topic: str
    kind: str  # "output" or "dead_letter": a metric label
    record: Record
    on_ack: Callable[[], None]  # the broker acknowledged the record
    wanted: Callable[[], bool] = _always  # checked before each (re)send: False drops the record
    # Its size was refused: a smaller record to send instead (None: none), e.g. a dead letter's value
    # cut. Without it, a refused record is retried with backoff like any failure.
    shrink: Callable[[Record], Record | None] | None = None
    attempts: int = 0


@dataclass(order=True)
class _Retry:
    due: float
    seq: int
    item: Outgoing = field(compare=False)


class Publisher:
    def __init__(
        self,
        producer_conf: dict[str, Any],
        *,
        on_failure: Callable[[Outgoing, str], None] | None = None,
        make_producer: Callable[[dict[str, Any]], Producer] = Producer,
    ) -> None:
        conf = idempotent_producer_conf(producer_conf)
        self._conf = conf
        self._make_producer = make_producer
        self._producer: Producer | None = None
        self._retired: list[Producer] = []
        self._outstanding: dict[int, Outgoing] = {}  # handed to the producer, not yet reported back
        self._failing_since: float | None = None
        self._last_reset = time.monotonic()
        self.resets = 0
        self.on_failure = on_failure
        self._retries: list[_Retry] = []
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="publisher", daemon=True)

    @property
    def producer(self) -> Producer:
        if self._producer is None:  # made by start(), or at first use by a caller that runs no thread
            self._producer = self._make_producer(self._conf)
        return self._producer

    @producer.setter
    def producer(self, producer: Producer) -> None:
        self._producer = producer

    @property
    def threads(self) -> list[threading.Thread]:
        return [self.thread]

    def start(self) -> None:
        """Make the producer and start the thread that serves its delivery reports and retries."""
        assert self.producer is not None
        self.thread.start()

    def send(self, item: Outgoing) -> None:
        if not item.wanted():
            return  # e.g. its partition was revoked: the new owner redoes the message
        rec = item.record
        key = next(self._seq)

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            with self._lock:
                current = self._outstanding.pop(key, None) is not None
            if err is not None and not current:
                return  # from a replaced producer: this record was already rescheduled
            if err is None:
                self._failing_since = None
                item.on_ack()
            else:
                self._failed(item, err.str(), err.code())

        while True:
            with self._lock:
                producer = self.producer
                self._outstanding[key] = item
            try:
                producer.produce(item.topic, value=rec.value, key=rec.key, headers=rec.headers,  # type: ignore[arg-type]
                                      on_delivery=delivered)
                return
            except BufferError:
                with self._lock:
                    self._outstanding.pop(key, None)
                try:
                    producer.poll(0.05)  # local queue full: let deliveries drain, then try again
                except KafkaException:
                    time.sleep(0.05)
            except Exception as exc:  # KafkaException and argument errors alike
                with self._lock:
                    self._outstanding.pop(key, None)
                err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
                self._failed(item, f"{type(exc).__name__}: {exc}", err.code() if isinstance(err, KafkaError) else None)
                return

    def _failed(self, item: Outgoing, error: str, code: int | None = None) -> None:
        if code in _SIZE_REFUSED and item.shrink is not None:
            smaller = item.shrink(item.record)
            if smaller is not None:
                log.warning("%s record of %d bytes refused for its size (%s): sending it with its value cut to %d "
                            "bytes", item.kind, len(item.record.value), error, len(smaller.value))
                item.record = smaller
                with self._lock:
                    heapq.heappush(self._retries, _Retry(time.monotonic(), next(self._seq), item))
                return
        item.attempts += 1
        if self._failing_since is None:
            self._failing_since = time.monotonic()
        delay = min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** min(item.attempts - 1, 10))
        log.warning("produce to %s failed, retrying with backoff: %s (attempt %d)", item.topic, error, item.attempts)
        if self.on_failure is not None:
            self.on_failure(item, error)
        with self._lock:
            heapq.heappush(self._retries, _Retry(time.monotonic() + delay, next(self._seq), item))

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                self._serve_once()
            except Exception:
                log.exception("publisher loop error; continuing")
                time.sleep(0.1)

    def _serve_once(self) -> None:
        try:
            self.producer.poll(0.05)
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.fatal():
                # e.g. the broker forgot this idempotent producer's id: only a new producer helps.
                self._reset(f"fatal producer error: {err.str()}")
            else:
                raise
        for old in list(self._retired):
            with contextlib.suppress(KafkaException):  # a retired producer's fatal error: already handled
                old.poll(0)
            if len(old) == 0:
                self._retired.remove(old)
        self._maybe_reset()
        self._resend_due()

    def _maybe_reset(self) -> None:
        now = time.monotonic()
        since = self._failing_since
        if since is None or now - since < RESET_AFTER_S or now - self._last_reset < RESET_AFTER_S:
            return
        self._reset(f"produce has failed for {now - since:.0f}s")

    def _reset(self, why: str) -> None:
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        log.warning("%s: replacing the producer with a fresh one and retrying its records", why)
        fresh = self._make_producer(self._conf)
        with self._lock:
            old, self.producer = self.producer, fresh
            pending = list(self._outstanding.values())
            self._outstanding.clear()
            for item in pending:  # everything the old producer held is sent again by the new one
                heapq.heappush(self._retries, _Retry(now, next(self._seq), item))
        self._last_reset = now
        self.resets += 1
        with contextlib.suppress(KafkaException):
            old.purge(in_queue=True, in_flight=True, blocking=False)
        self._retired.append(old)  # polled until drained; its reports are ignored

    def _resend_due(self) -> None:
        now = time.monotonic()
        due: list[Outgoing] = []
        with self._lock:
            while self._retries and self._retries[0].due <= now:
                due.append(heapq.heappop(self._retries).item)
        for item in due:
            self.send(item)

    def healthy(self) -> bool:
        """No failure since the last success, and nothing waiting to be retried."""
        return self._failing_since is None and self.pending_retries() == 0

    def pending_retries(self) -> int:
        with self._lock:
            return len(self._retries)

    def describe(self) -> dict[str, object]:
        with self._lock:
            outstanding, retries = len(self._outstanding), len(self._retries)
        since = self._failing_since
        return {"outstanding": outstanding, "retries": retries, "in_producer": len(self.producer),
                "retired_producers": len(self._retired), "resets": self.resets,
                "failing_for_s": None if since is None else round(time.monotonic() - since, 1)}

    def flush(self, timeout: float) -> int:
        """Wait for outstanding deliveries (and due retries). Returns how many are still pending."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                left = self.producer.flush(min(0.2, max(0.0, deadline - time.monotonic())))
            except KafkaException:
                left = len(self.producer)
            try:
                self._serve_once()
            except Exception:
                log.exception("publisher flush error; continuing")
            if left == 0 and self.pending_retries() == 0 and len(self.producer) == 0:  # nothing resent meanwhile
                return 0
        return len(self.producer) + self.pending_retries()

    def close(self, timeout: float) -> bool:
        """Stop the thread and flush. True when every record handed over was acknowledged."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2)
        return self._producer is None or self.flush(timeout) == 0
