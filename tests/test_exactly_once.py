"""kafka.delivery exactly_once: results, dead letters and input offsets in one Kafka transaction.

In-process first: the real stream (assembled from settings as `run` does) around a fake consumer
that can seek and a fake transactional producer that keeps what each transaction committed; the
rules (commit together, abort and rewind, revoke commits, lost aborts, fenced ends the run).
Then the real worker on a real broker that implements transactions (noida-db, TransactionalBroker)
under faults: kill -9 several times while it drains a backlog, SIGTERM mid-stream, a two-worker
rebalance (eager: range; noida-db completes no cooperative rebalance). A read_committed reader
started after the run finds every input id exactly once and no aborted record; the committed
offsets equal the end.
"""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from benchmarks.delivery_modes import compare
from testkit.cli import run_cli
from testkit.faults import metric
from testkit.kafka import Topics, committed, produce, start_worker
from testkit.wait import wait_until
from worker.config import BatchingSettings, KafkaSettings, Settings
from worker.devtools.transactional_broker import TransactionalBroker
from worker.observe.health import Health
from worker.observe.metrics import Metrics
from worker.stream.assemble import assemble
from worker.stream.consumer_loop import ConsumerLoop, OnCommit
from worker.stream.kafka_conf import transactional_id
from worker.stream.lifecycle import ExitStatus, Stream
from worker.stream.transactions import TransactionalPublisher

from .fakes import FakeClassifier, FakeConsumer, FakeMessage, chat

P0, P1 = ("in", 0), ("in", 1)


# ---- settings ----------------------------------------------------------------------------------------

def test_exactly_once_refuses_another_output_cluster_in_one_line(tmp_path: Path) -> None:
    env = {"EMOTION_WORKER_KAFKA__DELIVERY": "exactly-once",
           "EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
           "EMOTION_WORKER_KAFKA__OUTPUT_BOOTSTRAP_SERVERS": "127.0.0.1:2"}
    res = run_cli("run", env=env, cwd=tmp_path)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0, res.stderr
    assert res.stderr.startswith("error: config: EMOTION_WORKER_KAFKA__DELIVERY: exactly_once needs "
                                 "kafka.output_bootstrap_servers unset"), res.stderr
    assert "Traceback" not in res.stderr


def test_delivery_choices_and_the_transactional_id() -> None:
    assert KafkaSettings().delivery == "at_least_once"
    assert KafkaSettings(delivery="Exactly-Once").delivery == "exactly_once"  # type: ignore[arg-type]
    same = KafkaSettings(delivery="exactly_once", bootstrap_servers="a:1", output_bootstrap_servers="a:1")
    assert same.output_bootstrap_servers == "a:1"  # the same cluster, named twice: fine
    derived = transactional_id(KafkaSettings(group_id="g"))
    assert derived.startswith("g-") and derived.endswith(f"-{__import__('os').getpid()}")
    assert transactional_id(KafkaSettings(transactional_id="worker-0")) == "worker-0"


def test_a_delivery_timeout_over_the_transaction_timeout_is_librdkafkas_one_line(tmp_path: Path) -> None:
    env = {"EMOTION_WORKER_KAFKA__DELIVERY": "exactly_once", "EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1",
           "EMOTION_WORKER_KAFKA__PRODUCER": '{"message.timeout.ms": 60000}'}
    res = run_cli("run", env=env, cwd=tmp_path)
    assert res.returncode == 2
    assert "message.timeout.ms" in res.stderr and "transaction.timeout.ms" in res.stderr
    assert res.stderr.strip().count("\n") == 0, res.stderr


# ---- in-process: fakes -------------------------------------------------------------------------------

class SeekingConsumer(FakeConsumer):
    """A fake consumer that remembers every message, so `seek` can hand them out again."""

    def __init__(self) -> None:
        super().__init__()
        self.log: dict[tuple[str, int], list[FakeMessage]] = {}
        self.seeks: list[tuple[tuple[str, int], int]] = []
        self.generation = 1

    def add(self, *messages: FakeMessage) -> None:
        for m in messages:
            self.log.setdefault((m.topic_, m.partition_), []).append(m)
        self.queued.extend(messages)

    def seek(self, partition: TopicPartition) -> None:
        tp = (partition.topic, partition.partition)
        self.seeks.append((tp, partition.offset))
        self.queued = [m for m in self.queued if (m.topic_, m.partition_) != tp]
        self.queued.extend(m for m in self.log.get(tp, []) if m.offset_ >= partition.offset)

    def consumer_group_metadata(self) -> object:
        return ("group", self.generation)


@dataclass
class _Delivered:
    topic_: str
    value_: bytes

    def topic(self) -> str:
        return self.topic_


@dataclass
class FakeTransactionalProducer:
    """Plays a transactional producer and the broker behind it: records of the open transaction,
    delivery reports served at poll and flush, what each commit made visible (to read_committed)."""

    visible: list[tuple[str, bytes]] = field(default_factory=list)  # committed records
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)  # committed input offsets
    aborted: list[list[tuple[str, bytes]]] = field(default_factory=list)
    fail_deliveries: int = 0  # the next N deliveries fail
    fail_commits: list[KafkaError] = field(default_factory=list)  # the next commits fail with these
    current_generation: int = 1  # the group's: offsets of an older one are refused (KIP-447)
    inits: int = 0
    hold_reports: bool = False  # delivery reports wait (as while the broker is slow to answer)
    _open: list[tuple[str, bytes]] | None = None
    _reports: list[tuple[Callable[..., None], KafkaError | None, _Delivered]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def init_transactions(self, timeout: float) -> None:
        self.inits += 1

    def begin_transaction(self) -> None:
        assert self._open is None, "begin_transaction with a transaction open"
        self._open = []

    def produce(self, topic: str, *, value: bytes, key: Any, headers: Any, on_delivery: Callable[..., None]) -> None:
        with self._lock:
            assert self._open is not None, "produce outside a transaction"
            self._open.append((topic, value))
            err = None
            if self.fail_deliveries:
                self.fail_deliveries -= 1
                err = KafkaError(KafkaError._MSG_TIMED_OUT, "timed out")
            self._reports.append((on_delivery, err, _Delivered(topic, value)))

    def poll(self, timeout: float) -> int:
        with self._lock:
            reports, self._reports = ([], self._reports) if self.hold_reports else (self._reports, [])
        for callback, err, msg in reports:
            callback(err, msg)
        if not reports:
            time.sleep(min(timeout, 0.005))
        return len(reports)

    def flush(self, timeout: float) -> int:
        self.poll(0)
        return 0

    def __len__(self) -> int:
        return len(self._reports)

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], metadata: object, timeout: float) -> None:
        assert self._open is not None
        _, generation = metadata  # type: ignore[misc]
        if generation != self.current_generation:
            raise KafkaException(KafkaError(KafkaError.ILLEGAL_GENERATION, "fenced by the group",
                                            txn_requires_abort=True))
        self._pending_offsets = {(tp.topic, tp.partition): tp.offset for tp in offsets}

    def commit_transaction(self, timeout: float) -> None:
        assert self._open is not None
        if self.fail_commits:
            raise KafkaException(self.fail_commits.pop(0))
        self.visible.extend(self._open)
        self.offsets.update(getattr(self, "_pending_offsets", {}))
        self._pending_offsets = {}
        self._open = None

    def abort_transaction(self, timeout: float) -> None:
        if self._open is not None:
            self.aborted.append(self._open)
        self._open, self._pending_offsets = None, {}
        with self._lock:  # like librdkafka: what was not delivered yet is purged, and reported so
            self._reports = [(cb, KafkaError(KafkaError._PURGE_QUEUE, "purged"), msg) for cb, _, msg in self._reports]

    def purge(self, **_: Any) -> None:
        pass

    def output_ids(self) -> Counter[str]:
        return Counter(str(orjson.loads(v)["id"]) for t, v in self.visible if t == "out")


class Rig:
    def __init__(self, max_in_flight: int = 1000) -> None:
        settings = Settings(kafka=KafkaSettings(input_topic="in", output_topic="out", dead_letter_topic="dlq",
                                                max_in_flight=max_in_flight, delivery="exactly_once",
                                                transactional_id="t-1"),
                            batching=BatchingSettings(max_wait_ms=0), shutdown_timeout_s=2)
        self.consumer = SeekingConsumer()
        self.producer = FakeTransactionalProducer()
        self.metrics = Metrics()

        def make_consumer(on_commit: OnCommit) -> FakeConsumer:
            self.consumer.on_commit = on_commit
            return self.consumer

        self.stream: Stream = assemble(settings, FakeClassifier(), self.metrics, Health(30),
                                       make_consumer=make_consumer, make_producer=lambda conf: self.producer)  # type: ignore[arg-type,return-value]
        self.loop: ConsumerLoop = self.stream.loop
        assert isinstance(self.stream.sender, TransactionalPublisher)
        self.publisher: TransactionalPublisher = self.stream.sender
        self.stream.start()

    def feed(self, *messages: FakeMessage) -> None:
        """Queue messages and run the loop until the consumer has handed them all out."""
        self.consumer.add(*messages)
        self.settle()

    def settle(self) -> None:
        while self.consumer._ready():
            self.loop.run_once(wait_s=0)

    def processed(self, n: int) -> None:
        """Wait until n records are in the open transaction and delivered (the producer's thread)."""
        assert wait_until(lambda: self.loop.tracker.unfinished() == 0 and len(self.producer) == 0
                          and len(self.producer._open or []) >= n, 5)

    def metric(self, result: str) -> float:
        return self.metrics.transactions.labels(result=result)._value.get()


@pytest.fixture()
def rig() -> Iterator[Rig]:
    r = Rig()
    yield r
    r.stream.processing.close(1)
    r.publisher._stop.set()


def test_records_and_input_offsets_commit_together(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0, P1)
    rig.feed(*(chat("in", p, off) for off in range(5) for p in (0, 1)), FakeMessage("in", 0, 5, b"not json"))
    rig.processed(11)
    assert rig.producer.visible == [] and rig.producer.offsets == {}  # nothing visible before the commit
    assert rig.loop.commit()
    assert rig.producer.offsets == {P0: 6, P1: 5}
    assert sorted(rig.producer.output_ids()) == sorted(f"{p}:{o}" for o in range(5) for p in (0, 1))
    assert [t for t, _ in rig.producer.visible].count("dlq") == 1
    assert rig.metric("committed") == 1 and rig.metric("aborted") == 0
    assert rig.metrics.registry.get_sample_value("emotion_worker_transaction_seconds_count") == 1
    assert rig.loop.commit()  # nothing new: no empty transaction
    assert rig.metric("committed") == 1


def test_a_failed_delivery_aborts_and_the_span_is_read_again_from_the_last_commit(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(*(chat("in", 0, off) for off in range(3)))
    rig.processed(3)
    assert rig.loop.commit() and rig.producer.offsets == {P0: 3}
    rig.producer.fail_deliveries = 1  # offset 3's record is not delivered
    rig.feed(*(chat("in", 0, off) for off in range(3, 8)))
    # Every record handed over (produced, or dropped once the transaction was doomed), reports served.
    assert wait_until(lambda: rig.stream.processing.release.waiting() == 0 and len(rig.producer) == 0
                      and rig.publisher._why_abort is not None, 5)
    assert not rig.loop.commit()
    assert rig.metric("aborted") == 1
    assert rig.consumer.seeks == [(P0, 3)]
    assert rig.producer.aborted and 1 <= len(rig.producer.aborted[0]) <= 5
    rig.settle()  # the re-read
    rig.processed(5)
    assert rig.loop.commit()
    assert rig.producer.offsets == {P0: 8}
    assert rig.producer.output_ids() == Counter({f"0:{o}": 1 for o in range(8)})  # each once, none lost


def test_an_abortable_commit_error_aborts_and_rewinds_to_the_first_offset_when_none_was_committed(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(*(chat("in", 0, off) for off in range(10, 14)))  # a group that starts at offset 10
    rig.processed(4)
    rig.producer.fail_commits = [KafkaError(KafkaError.COORDINATOR_NOT_AVAILABLE, "gone", txn_requires_abort=True)]
    assert not rig.loop.commit()
    assert rig.consumer.seeks == [(P0, 10)] and rig.producer.visible == []
    rig.settle()
    rig.processed(4)
    assert rig.loop.commit() and rig.producer.offsets == {P0: 14}
    assert rig.producer.output_ids() == Counter({f"0:{o}": 1 for o in range(10, 14)})


def test_messages_fetched_before_the_rewinds_seek_are_not_taken(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(*(chat("in", 0, off) for off in range(4)))
    rig.processed(4)
    rig.producer.fail_commits = [KafkaError(KafkaError._TIMED_OUT, "slow", txn_requires_abort=True)]
    assert not rig.loop.commit()
    # A message fetched before the seek (offset 4, past everything registered) arrives first: it
    # must not be registered ahead of the re-read 0..3, or the commit point would skip them.
    rig.consumer.queued.insert(0, chat("in", 0, 4))
    rig.consumer.log[P0].append(chat("in", 0, 4))
    rig.settle()
    rig.processed(4)
    assert rig.loop.commit()
    assert rig.producer.output_ids() == Counter({f"0:{o}": 1 for o in range(4)})
    assert rig.producer.offsets == {P0: 4}
    rig.consumer.seek(TopicPartition("in", 0, 4))  # offset 4 comes again, now in order
    rig.settle()
    rig.processed(1)
    assert rig.loop.commit() and rig.producer.offsets == {P0: 5}


def test_revoke_commits_the_open_transaction_before_letting_go(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0, P1)
    rig.feed(*(chat("in", p, off) for off in range(3) for p in (0, 1)))
    rig.processed(6)
    rig.consumer.rebalance("revoke", P1)
    assert rig.producer.offsets == {P0: 3, P1: 3}  # every partition's: the transaction held both
    assert rig.producer._open is None and len(rig.producer.visible) == 6
    assert rig.loop.tracker.assigned() == [P0]


def test_a_lost_partition_aborts_the_open_transaction_and_rewinds_the_others(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0, P1)
    rig.producer.hold_reports = True  # the abort comes before the deliveries: they are purged
    rig.feed(*(chat("in", p, off) for off in range(3) for p in (0, 1)))
    assert wait_until(lambda: len(rig.producer._open or []) == 6, 5)
    rig.consumer.rebalance("lost", P1)
    rig.producer.hold_reports = False  # the purge reports of the aborted transaction: they doom nothing after it
    assert wait_until(lambda: len(rig.producer) == 0, 5)
    assert rig.producer.visible == [] and rig.producer.offsets == {}
    assert rig.metric("aborted") == 1
    assert rig.consumer.seeks == [(P0, 0)]
    rig.settle()
    rig.processed(3)
    assert rig.loop.commit()
    assert rig.producer.offsets == {P0: 3}
    assert rig.producer.output_ids() == Counter({f"0:{o}": 1 for o in range(3)})


def test_offsets_of_an_old_generation_are_refused_and_the_transaction_aborts(rig: Rig) -> None:
    """KIP-447: a worker whose partitions moved on (a newer group generation) cannot commit."""
    rig.consumer.rebalance("assign", P0)
    rig.feed(*(chat("in", 0, off) for off in range(3)))
    rig.processed(3)
    rig.producer.current_generation = 2
    assert not rig.loop.commit()
    assert rig.producer.visible == [] and rig.metric("aborted") == 1


def test_fenced_by_a_newer_instance_ends_the_run_with_the_fatal_status(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(chat("in", 0, 0))
    rig.processed(1)
    rig.producer.fail_commits = [KafkaError(KafkaError._FENCED, "fenced by a newer instance", fatal=True)]
    assert not rig.loop.commit()
    assert rig.loop.fatal is not None and rig.publisher.fatal is not None
    rig.loop.run(threading.Event())  # returns at once: the run is over
    rig.stream.close(1)
    assert rig.stream.exit_status() == ExitStatus.FATAL
    assert rig.producer.visible == []


def test_shutdown_commits_the_last_transaction(rig: Rig) -> None:
    rig.consumer.rebalance("assign", P0)
    rig.feed(*(chat("in", 0, off) for off in range(4)))
    assert rig.stream.close(2)
    assert rig.producer.offsets == {P0: 4} and len(rig.producer.output_ids()) == 4
    assert rig.stream.exit_status() == ExitStatus.CLEAN


# ---- the real worker on a broker with transactions --------------------------------------------------

@pytest.fixture(scope="module")
def txn_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TransactionalBroker]:
    with TransactionalBroker(log_path=tmp_path_factory.mktemp("noida") / "broker.log") as b:
        yield b


def eos_env(slot: str, **extra: str) -> dict[str, str]:
    """exactly_once, eager assignment (noida-db completes no cooperative rebalance), and the
    worker's identity kept across its restarts, as a StatefulSet's pod name would be: the
    transactional id (noida-db never times out a transaction a killed worker left open: the
    restarted one aborts it at start) and a static group member id (noida-db does not evict a
    killed member: the restarted one takes its place at once)."""
    name = f"eos-test-{slot}-{uuid.uuid4().hex[:6]}"
    return {"EMOTION_WORKER_KAFKA__DELIVERY": "exactly_once",
            "EMOTION_WORKER_KAFKA__ASSIGNMENT_STRATEGY": "range",
            "EMOTION_WORKER_KAFKA__SESSION_TIMEOUT_MS": "6000",  # noida-db's least (Kafka's default least)
            "EMOTION_WORKER_KAFKA__CONSUMER": orjson.dumps({"heartbeat.interval.ms": 500,
                                                            "group.instance.id": name}).decode(),
            "EMOTION_WORKER_KAFKA__TRANSACTIONAL_ID": name, **extra}


def chat_records(n: int, prefix: str = "s", start: int = 0) -> Iterator[tuple[bytes, bytes, list[Any]]]:
    for i in range(start, start + n):
        yield f"room{i % 7}".encode(), orjson.dumps({"id": f"{prefix}{i}", "text": f"chat line {i}, thanks!"}), []


def read_committed(bootstrap: str, *topics: str, expect: int, timeout: float = 60.0,
                   isolation: str = "read_committed") -> dict[str, list[Any]]:
    """A fresh read_committed reader from the beginning (noida-db: one already caught up may miss
    later transactions), until `expect` records of the first topic, then 1 s of quiet."""
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                  "isolation.level": isolation, "enable.auto.commit": False})
    parts = []
    for t in topics:
        md = c.list_topics(t, timeout=10).topics[t]
        parts += [TopicPartition(t, p, OFFSET_BEGINNING) for p in md.partitions]
    c.assign(parts)
    out: dict[str, list[Any]] = {t: [] for t in topics}
    deadline, quiet = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        batch = [m for m in c.consume(1000, timeout=0.2) if m.error() is None]
        for m in batch:
            out[m.topic()].append(m)
        if len(out[topics[0]]) >= expect:
            quiet = quiet or time.monotonic()
            if batch:
                quiet = time.monotonic()
            elif time.monotonic() - quiet > 1.0:
                break
    c.close()
    return out


def check_exactly_once(broker: TransactionalBroker, topics: Topics, n: int, partitions: int) -> dict[str, int]:
    """Once the group's committed offsets reach the end (all n inputs), a fresh read_committed
    reader (noida-db: a reader caught up before may miss later transactions) finds each input id
    exactly once in the output, in input order per key, no dead letter, and the committed offsets
    are one past each input partition's last offset."""
    def done() -> bool:
        return sum(max(o, 0) for o in committed(broker.bootstrap, topics.group, topics.input, partitions).values()) >= n

    assert wait_until(done, 90, interval=0.5), committed(broker.bootstrap, topics.group, topics.input, partitions)
    got = read_committed(broker.bootstrap, topics.output, topics.dlq, expect=n, timeout=30)
    ids = Counter(str(orjson.loads(m.value())["id"]) for m in got[topics.output])
    sent = {f"s{i}" for i in range(n)}
    result = {"sent": n, "outputs": sum(ids.values()), "lost": len(sent - set(ids)),
              "duplicates": sum(ids.values()) - len(set(ids)), "dead_letters": len(got[topics.dlq])}
    assert result["lost"] == 0 and result["duplicates"] == 0 and result["dead_letters"] == 0, result
    by_key: dict[bytes, list[int]] = {}  # one key's messages share an input and an output partition
    for m in got[topics.output]:
        by_key.setdefault(m.key(), []).append(orjson.loads(m.value())["source"]["offset"])
    assert all(offsets == sorted(offsets) for offsets in by_key.values()), "outputs out of input order"
    ends: Counter[int] = Counter()  # one past each input partition's last offset, from the outputs' sources
    for m in got[topics.output]:
        source = orjson.loads(m.value())["source"]
        ends[source["partition"]] = max(ends[source["partition"]], source["offset"] + 1)
    assert committed(broker.bootstrap, topics.group, topics.input, partitions) == dict(ends), result
    return result


def test_kill9_while_draining_a_backlog_leaves_every_result_exactly_once(
        txn_broker: TransactionalBroker, tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    backlog, crashes, partitions = 1500, 4, 3
    topics = Topics.fresh(txn_broker, partitions=partitions)
    produce(txn_broker.bootstrap, topics.input, chat_records(backlog))
    # Input keeps arriving (about 1000 a second) until the last kill, so each worker is busy when it
    # is killed however fast this machine drains what it finds.
    crashing = threading.Event()
    crashing.set()
    produced = [backlog]

    def keep_producing() -> None:
        while crashing.is_set():
            produce(txn_broker.bootstrap, topics.input, chat_records(100, start=produced[0]))
            produced[0] += 100
            time.sleep(0.1)

    feeder = threading.Thread(target=keep_producing, daemon=True)
    feeder.start()
    worker = start_worker(txn_broker, topics, tiny_encoder, tiny_head, tmp_path / "w.log",
                          **eos_env("kill", EMOTION_WORKER_KAFKA__COMMIT_INTERVAL_MS="300",
                                    EMOTION_WORKER_KAFKA__MAX_IN_FLIGHT="400"))
    rng = random.Random(23)
    try:
        for _ in range(crashes):
            # Kill a worker that is busy: it has committed a transaction, and has work in flight (its
            # records go into the open one).
            assert wait_until(lambda: metric(worker, 'emotion_worker_transactions_total{result="committed"}') > 0
                              and metric(worker, "emotion_worker_in_flight_messages") > 0, 60), worker.log()[-3000:]
            time.sleep(rng.uniform(0.0, 0.05))
            worker.signal(signal.SIGKILL)
            worker.wait(10)
            worker.start()
    finally:
        crashing.clear()
        feeder.join(10)
    n = produced[0]
    check_exactly_once(txn_broker, topics, n, partitions)
    assert worker.stop() == 0, worker.log()[-3000:]
    assert worker.log().count("Traceback") == 0
    # The kills left records of open transactions in the log: a read_uncommitted reader sees them,
    # the read_committed one above did not.
    everything = read_committed(txn_broker.bootstrap, topics.output, expect=n, timeout=20, isolation="read_uncommitted")
    assert len(everything[topics.output]) > n


def test_sigterm_mid_stream_commits_and_exits_0(txn_broker: TransactionalBroker, tiny_encoder: Path,
                                                 tiny_head: Path, tmp_path: Path) -> None:
    # Enough backlog that a fast (quiet) machine is still mid-stream when SIGTERM arrives at 300 done.
    n, partitions = 6000, 3
    topics = Topics.fresh(txn_broker, partitions=partitions)
    produce(txn_broker.bootstrap, topics.input, chat_records(n))
    identity = eos_env("term")
    worker = start_worker(txn_broker, topics, tiny_encoder, tiny_head, tmp_path / "w.log", **identity)
    assert wait_until(lambda: metric(worker, "emotion_worker_messages_published_total") >= 300, 60)
    done_before_stop = metric(worker, "emotion_worker_messages_published_total")
    assert worker.stop() == 0, worker.log()[-3000:]  # SIGTERM mid-stream: drain, commit the transaction
    assert done_before_stop < n  # mid-stream: the restarted worker has the rest to do
    worker.start()  # the same worker again (a static member does not leave the group: it takes its place back)
    check_exactly_once(txn_broker, topics, n, partitions)
    assert worker.stop() == 0


def test_two_workers_rebalance_and_every_result_is_there_once(txn_broker: TransactionalBroker, tiny_encoder: Path,
                                                             tiny_head: Path, tmp_path: Path) -> None:
    n, partitions = 3000, 4
    topics = Topics.fresh(txn_broker, partitions=partitions)
    produce(txn_broker.bootstrap, topics.input, chat_records(n))
    first = start_worker(txn_broker, topics, tiny_encoder, tiny_head, tmp_path / "a.log", **eos_env("a"))
    assert wait_until(lambda: metric(first, "emotion_worker_messages_published_total") >= 300, 60)
    second = start_worker(txn_broker, topics, tiny_encoder, tiny_head, tmp_path / "b.log", **eos_env("b"))
    assert second.wait_assigned(60), second.log()[-3000:]  # the first gave some partitions up: revoke commits
    assert first.assignments() >= 2
    check_exactly_once(txn_broker, topics, n, partitions)
    assert first.stop() == 0 and second.stop() == 0


def test_the_delivery_modes_benchmark_runs(tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    """A smoke run of benchmarks/delivery_modes.py (the integrator runs the real one on a quiet CPU)."""
    texts = [f"so glad you made it {i}" for i in range(50)]
    out = compare(tiny_encoder, tiny_head, texts, messages=300, load_fraction=0.3, load_seconds=2.0,
                  work=tmp_path)
    for mode in ("at_least_once", "exactly_once"):
        assert out[mode]["backlog"]["texts_per_s"] > 0 and out[mode]["exit_status"] == 0, out
        assert out[mode]["load"]["n"] == out[mode]["load"]["sent"], out  # every load message came back
        assert out[mode]["load"]["p99_ms"] > 0
    assert out["exactly_once"]["transactions"]["committed"] > 0
    assert out["at_least_once"]["transactions"]["committed"] == 0
    assert out["exactly_once"]["load"]["rate_per_s"] == out["at_least_once"]["load"]["rate_per_s"]
