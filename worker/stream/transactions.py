"""exactly_once: the transactional publisher. Results and dead letters of a span of input go out in
one Kafka transaction together with the input offsets they answer; the consumer loop commits it
every commit interval (and on revoke and at shutdown), or aborts it.

    send (any thread)   -> begins a transaction if none is open, produces into it
    commit (the loop)   -> no send meanwhile: flush (every record delivered and acknowledged to the
                           offset tracker) -> send_offsets_to_transaction(the commit points, the
                           consumer's group metadata) -> commit_transaction
    a failure           -> abort_transaction, then `on_abort` (the loop rewinds every partition to
                           its last committed offset: the aborted work is redone)

A transaction holds every record produced since the last commit, and the commit points cover every
one of them: records leave each partition in input order (worker.stream.release) and the commit
waits for all deliveries while sends wait, so no record can commit without its input offset, nor an
offset without its record. A failure anywhere (a delivery, the offsets, the commit itself, a fenced
or fatal producer) aborts the whole transaction; nothing of it is visible to read_committed readers,
and the rewind redoes it. A delivery failure is not retried here as the at-least-once publisher
does: the redo is the retry.

The group metadata (KIP-447) fences a worker whose partitions went elsewhere: the broker refuses its
offsets, so its transaction aborts. The transactional id (worker.stream.kafka_conf.transactional_id)
fences an older instance with the same id: starting aborts what it left open. Being fenced by a newer
instance (two workers with one id) is fatal: `fatal` is set and the loop ends the run (exit 3).

The lock is the transaction's: a send holds it to produce (and checks `wanted` under it, so a record
of a rewound partition never enters a later transaction); commit and abort hold it throughout,
rewind included. Delivery reports never take it (they are served inside flush, under it).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import zlib
from collections.abc import Callable
from enum import Enum
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer, TopicPartition

from worker.observe.metrics import Metrics
from worker.stream.kafka_conf import idempotent_producer_conf
from worker.stream.publish import Outgoing
from worker.stream.types import PartitionId

log = logging.getLogger(__name__)

CALL_TIMEOUT_S = 10.0  # each transactional call (init, offsets, commit, abort) waits at most this
RETRY_INIT_S = 1.0  # init_transactions again after a failure (at each commit): at most this long
FLUSH_TIMEOUT_S = 30.0  # a commit waits this long for the transaction's deliveries, then aborts
SERVE_WAIT_S = 0.05
_FENCED = (KafkaError._FENCED, KafkaError.PRODUCER_FENCED, KafkaError.INVALID_PRODUCER_EPOCH)
_SIZE_REFUSED = (KafkaError.MSG_SIZE_TOO_LARGE,)


class State(Enum):
    UNINIT = "uninitialised"  # init_transactions not done (yet, or it failed and is retried at the next commit)
    IDLE = "idle"  # ready; no transaction open
    OPEN = "open"  # a transaction is open and healthy
    DOOMED = "doomed"  # a transaction is open and must abort
    DEAD = "dead"  # the producer failed fatally: a fresh one (same transactional id) is made at the next commit


def _error(exc: BaseException) -> KafkaError | None:
    err = exc.args[0] if isinstance(exc, KafkaException) and exc.args else None
    return err if isinstance(err, KafkaError) else None


class TransactionalPublisher:
    """A Sender (worker.stream.outputs) whose records go out in transactions, and their control for
    the consumer loop (`commit`, `abort`, `fatal`)."""

    def __init__(self, producer_conf: dict[str, Any], metrics: Metrics, *,
                 on_failure: Callable[[Outgoing, str], None] | None = None,
                 make_producer: Callable[[dict[str, Any]], Producer] = Producer,
                 call_timeout_s: float = CALL_TIMEOUT_S, flush_timeout_s: float = FLUSH_TIMEOUT_S) -> None:
        self._conf = idempotent_producer_conf(producer_conf)
        self.transactional_id = str(self._conf.get("transactional.id", ""))
        self._make_producer = make_producer
        self._producer: Producer | None = None
        self.metrics = metrics
        self.on_failure = on_failure
        self.call_timeout_s = call_timeout_s
        self.flush_timeout_s = flush_timeout_s
        self._lock = threading.Lock()  # the transaction's (see the module's doc)
        self._state = State.UNINIT
        self._txn = 0  # number of the current (or last) transaction
        self._began = 0.0
        self._why_abort: str | None = None  # why the open transaction must abort; set by delivery reports too
        self._dropped = False  # a record was dropped since the last commit: its work must be redone
        self._in_txn = False  # a transaction was begun and has not ended
        self._init_waiting = False  # init_transactions has failed (said once) and is retried
        self._too_large: set[int] = set()  # crc32 of records the broker refused for their size: sent cut
        self._poll_error: KafkaError | None = None
        self.fatal: KafkaError | None = None  # fenced by a newer instance with our transactional id
        self.committed = self.aborted = 0
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, name="publisher", daemon=True)

    # ---- Sender ----------------------------------------------------------------------------------
    @property
    def producer(self) -> Producer:
        if self._producer is None:
            self._producer = self._make_producer(self._conf)
        return self._producer

    @property
    def threads(self) -> list[threading.Thread]:
        return [self.thread]

    def start(self) -> None:
        """Make the producer, initialise transactions (aborting what an earlier instance with the
        same transactional id left open) and start the thread that serves delivery reports."""
        log.info("exactly-once: results, dead letters and input offsets in transactions (transactional id %s); "
                 "readers of the output need isolation.level=read_committed", self.transactional_id)
        with self._lock:
            self._ready(self.call_timeout_s)
        self.thread.start()

    def send(self, item: Outgoing) -> None:
        with self._lock:
            if not item.wanted():
                return  # its partition was revoked, lost or rewound: its work is redone
            if self._state in (State.UNINIT, State.DEAD, State.DOOMED) or self._why_abort is not None:
                self._dropped = True  # this span aborts: the rewind redoes the work
                return
            if self._state is State.IDLE and not self._begin():
                self._dropped = True
                return
            self._produce(item)

    def _begin(self) -> bool:
        try:
            self.producer.begin_transaction()
        except KafkaException as exc:
            self._failed_call("begin_transaction", exc)
            return False
        self._state, self._txn, self._began = State.OPEN, self._txn + 1, time.monotonic()
        self._why_abort, self._in_txn = None, True
        return True

    def _produce(self, item: Outgoing) -> None:
        txn = self._txn
        if item.shrink is not None and zlib.crc32(item.record.value) in self._too_large:
            item.record = item.shrink(item.record) or item.record

        def delivered(err: KafkaError | None, _msg: Message) -> None:  # never takes the lock
            if err is None:
                item.on_ack()  # counts for a current ticket only; a rewind voids an aborted one's
                return
            if txn != self._txn or not self._in_txn:
                return  # a record of a transaction that ended (purged by its abort)
            if err.code() in _SIZE_REFUSED and item.shrink is not None:
                self._too_large.add(zlib.crc32(item.record.value))
            self._doom(f"delivery to {item.topic} failed: {err.str()}")
            if self.on_failure is not None:
                self.on_failure(item, err.str())

        rec = item.record
        while True:
            try:
                self.producer.produce(item.topic, value=rec.value, key=rec.key, headers=rec.headers,  # type: ignore[arg-type]
                                      on_delivery=delivered)
                return
            except BufferError:
                self.producer.poll(SERVE_WAIT_S)  # the local queue is full: let deliveries drain
            except KafkaException as exc:
                err = _error(exc)
                if err is not None and err.code() in _SIZE_REFUSED and item.shrink is not None:
                    smaller = item.shrink(rec)
                    if smaller is not None and len(smaller.value) < len(rec.value):
                        item.record = rec = smaller
                        continue
                self._doom(f"produce to {item.topic} failed: {exc}")
                return
            except (TypeError, ValueError) as exc:
                self._doom(f"produce to {item.topic} failed: {exc}")
                return

    def _doom(self, why: str) -> None:
        if self._why_abort is None:
            self._why_abort = why

    def healthy(self) -> bool:
        return self._state in (State.IDLE, State.OPEN) and self._why_abort is None and self.fatal is None

    def describe(self) -> dict[str, object]:
        since = round(time.monotonic() - self._began, 1) if self._state in (State.OPEN, State.DOOMED) else None
        return {"transactional_id": self.transactional_id, "state": self._state.value, "transaction": self._txn,
                "open_for_s": since, "abort_reason": self._why_abort, "committed": self.committed,
                "aborted": self.aborted, "in_producer": len(self._producer) if self._producer is not None else 0}

    def close(self, timeout: float) -> bool:
        """Stop the thread and wait for the open transaction's deliveries. The transaction stays
        open: the consumer loop commits it (with the offsets) when it closes."""
        self._stop.set()
        if self.thread.is_alive():
            self.thread.join(timeout=2)
        if self._producer is None:
            return True
        try:
            left = self.producer.flush(timeout)
        except KafkaException as exc:
            log.warning("flushing the transactional producer: %s", exc)
            return False
        return left == 0 and self._why_abort is None

    # ---- the consumer loop's ------------------------------------------------------------------------
    def commit(self, due: Callable[[], dict[PartitionId, int]], group_metadata: object,
               on_abort: Callable[[], None]) -> dict[PartitionId, int] | None:
        """Commit the open transaction with the offsets `due()` names once every record is delivered
        (`due` is asked after the flush). Returns the offsets committed ({} when there was nothing to
        commit), or None when the transaction was aborted instead: then `on_abort` has run, under the
        transaction's lock, to rewind the partitions."""
        with self._lock:
            if self._state in (State.UNINIT, State.DEAD) and not self._in_txn and not self._dropped:
                self._ready()  # nothing was lost meanwhile: only get ready
                return {}
            if self._state is State.OPEN:
                left = self._flush()
                if left:
                    self._doom(f"{left} records not delivered within {self.flush_timeout_s:.0f}s")
            if self._state is State.IDLE and not self._dropped:
                offsets = due()
                if not offsets:
                    return {}
                if not self._begin():  # offsets without records: not expected (every message has a record)
                    self._abort(on_abort)
                    return None
            if self._state is not State.OPEN or self._why_abort is not None or self._dropped:
                self._abort(on_abort)
                return None
            offsets = due()
            try:
                if offsets:
                    self._call(lambda: self.producer.send_offsets_to_transaction(
                        [TopicPartition(t, p, off) for (t, p), off in offsets.items()], group_metadata,
                        self.call_timeout_s))
                self._call(lambda: self.producer.commit_transaction(self.call_timeout_s))
            except KafkaException as exc:
                self._failed_call("commit", exc)
                self._abort(on_abort)
                return None
            self._ended("committed")
            return offsets

    def abort(self, on_abort: Callable[[], None]) -> None:
        """Abort the open transaction (a partition was lost: its records must not commit) and rewind."""
        with self._lock:
            self._abort(on_abort)

    def _abort(self, on_abort: Callable[[], None]) -> None:
        why = self._why_abort or ("records were dropped while transactions were not ready" if self._dropped
                                  else "asked")
        if self._state in (State.OPEN, State.DOOMED):
            try:
                self._call(lambda: self.producer.abort_transaction(self.call_timeout_s))
            except KafkaException as exc:
                self._failed_call("abort_transaction", exc)
                if self._state is State.OPEN:
                    self._state = State.DOOMED  # asked again at the next commit; nothing of it commits meanwhile
            else:
                self._ended("aborted")
            log.warning("transaction %d aborted (%s); re-reading from the last committed offsets", self._txn, why)
        else:
            if self._in_txn:  # the producer died with it open: the broker aborts it (a fresh producer at once)
                self._ended("aborted")
            log.warning("re-reading from the last committed offsets: %s", why)
        self._dropped = False
        if self._state is State.IDLE:
            self._why_abort = None
        self._ready()
        on_abort()

    def _ended(self, result: str) -> None:
        self.metrics.transactions.labels(result=result).inc()
        self.metrics.transaction_seconds.observe(time.monotonic() - self._began)
        if result == "committed":
            self.committed += 1
        else:
            self.aborted += 1
        self._in_txn = False
        if self._state in (State.OPEN, State.DOOMED):
            self._state, self._why_abort = State.IDLE, None

    def _flush(self) -> int:
        deadline = time.monotonic() + self.flush_timeout_s
        while True:
            try:
                left = self.producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
            except KafkaException as exc:
                self._failed_call("flush", exc)
                return 0
            if left == 0 or self._why_abort is not None or time.monotonic() >= deadline:
                return left

    def _call(self, call: Callable[[], None]) -> None:
        """A transactional call, repeated while it fails with a retriable error (within the call timeout)."""
        deadline = time.monotonic() + self.call_timeout_s
        while True:
            try:
                call()
                return
            except KafkaException as exc:
                err = _error(exc)
                if err is None or not err.retriable() or time.monotonic() >= deadline:
                    raise
                time.sleep(0.1)

    def _failed_call(self, what: str, exc: KafkaException) -> None:
        err = _error(exc)
        text = err.str() if err is not None else str(exc)
        if err is not None and err.code() in _FENCED:
            self.fatal = err
            self._state = State.DEAD
            log.error("transactional producer fenced: another worker uses the transactional id %s (give each worker "
                      "its own kafka.transactional_id): %s", self.transactional_id, text)
        elif err is not None and err.fatal():
            self._state = State.DEAD
            log.warning("transactional producer failed (%s: %s): a fresh one takes over", what, text)
        else:
            self._doom(f"{what}: {text}")
            if self._state is State.OPEN:
                self._state = State.DOOMED

    def _ready(self, timeout: float = RETRY_INIT_S) -> bool:
        """Bring the producer to IDLE from UNINIT or DEAD (a fresh producer), waiting at most
        `timeout` for init_transactions (a call that timed out resumes where it was at the next
        one: while the brokers are away, each commit interval waits only this). True when ready."""
        if self._state is State.DEAD and self.fatal is None:
            old, self._producer = self._producer, None
            if old is not None:
                with contextlib.suppress(KafkaException):
                    old.purge(in_queue=True, in_flight=True, blocking=False)
            self._state = State.UNINIT
        if self._state is State.UNINIT:
            try:
                self.producer.init_transactions(timeout)
            except KafkaException as exc:
                err = _error(exc)
                if err is not None and err.fatal():
                    self._failed_call("init_transactions", exc)
                elif not self._init_waiting:  # said once; the brokers' reachability is told by the clients
                    self._init_waiting = True
                    log.warning("transactions not initialised yet (transactional id %s): %s; retrying at each commit",
                                self.transactional_id, err.str() if err is not None else exc)
                return False
            self._state = State.IDLE
            if self._init_waiting:
                self._init_waiting = False
                log.info("transactions initialised (transactional id %s)", self.transactional_id)
        return self._state in (State.IDLE, State.OPEN)

    # ---- delivery reports ---------------------------------------------------------------------------
    def _serve(self) -> None:
        while not self._stop.is_set():
            producer = self._producer
            if producer is None:
                time.sleep(SERVE_WAIT_S)
                continue
            try:
                producer.poll(SERVE_WAIT_S)
            except KafkaException as exc:  # a fatal producer error: the next commit replaces the producer
                err = _error(exc)
                if err is not None and err is not self._poll_error:
                    self._poll_error = err
                    self._doom(f"producer error: {err.str()}")
                time.sleep(SERVE_WAIT_S)
            except Exception:
                log.exception("publisher loop error; continuing")
                time.sleep(0.1)
