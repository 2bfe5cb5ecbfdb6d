"""Small in-process stand-ins for the Kafka clients and the engine, to drive the consumer loop's
rules without a broker. They record what the loop asked of them; tests decide when records are
acknowledged."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import KafkaError, TopicPartition

from worker.engine.result import ModelIdentity, Result, Timing
from worker.labels import LABELS
from worker.stream.publish import Outgoing


@dataclass
class FakeMessage:
    topic_: str
    partition_: int
    offset_: int
    value_: bytes | None

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self.topic_

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return 1, int(time.time() * 1000)

    def key(self) -> bytes:
        return b"k"

    def headers(self) -> list[tuple[str, bytes]]:
        return []

    def value(self) -> bytes | None:
        return self.value_


@dataclass
class FakeErrorMessage(FakeMessage):
    """What the consumer hands out for a client error instead of a message."""

    error_: KafkaError | None = None

    def error(self) -> KafkaError | None:  # type: ignore[override]
        return self.error_


def fatal_error(topic: str = "in") -> FakeErrorMessage:
    return FakeErrorMessage(topic, 0, -1, None, KafkaError(KafkaError._FATAL, "fenced by a newer member", fatal=True))


def chat(topic: str, partition: int, offset: int) -> FakeMessage:
    return FakeMessage(topic, partition, offset, orjson.dumps({"id": f"{partition}:{offset}", "text": f"hi {offset}"}))


@dataclass
class FakeConsumer:
    """Hands out queued messages of unpaused partitions; records commits, pauses and resumes.

    Like librdkafka, an asynchronous commit's outcome reaches `on_commit` at the next poll or
    consume; `fail_async_commits` of them (the next ones) fail there, with the broker's error."""

    queued: list[FakeMessage] = field(default_factory=list)
    commits: list[tuple[dict[tuple[str, int], int], bool]] = field(default_factory=list)  # every request
    confirmed: dict[tuple[str, int], int] = field(default_factory=dict)  # what the broker took
    on_commit: Callable[[KafkaError | None, list[TopicPartition]], None] | None = None
    fail_async_commits: int = 0
    _reports: list[tuple[KafkaError | None, list[TopicPartition]]] = field(default_factory=list)
    paused: set[tuple[str, int]] = field(default_factory=set)
    pause_calls: int = 0
    resume_calls: int = 0
    callbacks: dict[str, Callable[[Any, list[TopicPartition]], None]] = field(default_factory=dict)
    closed: bool = False
    metadata_requests: int = 0

    def subscribe(self, topics: list[str], *, on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        self.callbacks = {"assign": on_assign, "revoke": on_revoke, "lost": on_lost}

    def rebalance(self, kind: str, *tps: tuple[str, int]) -> None:
        self.callbacks[kind](self, [TopicPartition(t, p) for t, p in tps])

    def _ready(self) -> list[FakeMessage]:
        return [m for m in self.queued if (m.topic_, m.partition_) not in self.paused]

    def _serve_reports(self) -> None:
        reports, self._reports = self._reports, []
        for err, partitions in reports:
            if self.on_commit is not None:
                self.on_commit(err, partitions)

    def poll(self, timeout: float) -> FakeMessage | None:
        self._serve_reports()
        ready = self._ready()
        if not ready:
            return None
        self.queued.remove(ready[0])
        return ready[0]

    def consume(self, num_messages: int, timeout: float) -> list[FakeMessage]:
        self._serve_reports()
        taken = self._ready()[:num_messages]
        for m in taken:
            self.queued.remove(m)
        return taken

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> list[TopicPartition] | None:
        requested = {(tp.topic, tp.partition): tp.offset for tp in offsets}
        self.commits.append((requested, asynchronous))
        reported = [TopicPartition(tp.topic, tp.partition, tp.offset) for tp in offsets]
        if asynchronous and self.fail_async_commits > 0:
            self.fail_async_commits -= 1
            self._reports.append((KafkaError(KafkaError.REBALANCE_IN_PROGRESS), reported))
            return None
        self.confirmed.update(requested)
        self._reports.append((None, reported))
        return None if asynchronous else reported

    def committed(self) -> dict[tuple[str, int], int]:
        """The latest offset per partition that the broker took."""
        return dict(self.confirmed)

    def pause(self, partitions: list[TopicPartition]) -> None:
        self.pause_calls += 1
        self.paused |= {(tp.topic, tp.partition) for tp in partitions}

    def resume(self, partitions: list[TopicPartition]) -> None:
        self.resume_calls += 1
        self.paused -= {(tp.topic, tp.partition) for tp in partitions}

    def list_topics(self, topic: str | None = None, timeout: float = -1) -> None:
        self.metadata_requests += 1

    def close(self) -> None:
        self.closed = True


class FakeSender:
    """Keeps every record handed to it; `ack` plays the broker's acknowledgement."""

    def __init__(self) -> None:
        self.sent: list[Outgoing] = []
        self._lock = threading.Lock()
        self.started = self.closed = False
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        self.started = True

    def send(self, item: Outgoing) -> None:
        if item.wanted():
            with self._lock:
                self.sent.append(item)

    def ids(self) -> list[str]:
        return [str(orjson.loads(item.record.value).get("id")) for item in self.sent if item.kind == "output"]

    def ack(self, *indices: int) -> None:
        for i in indices:
            self.sent[i].on_ack()

    def wait_for(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.sent) < n:
            assert time.monotonic() < deadline, f"only {len(self.sent)} of {n} records were sent"
            time.sleep(0.005)

    def close(self, timeout: float) -> bool:
        self.closed = True
        return True

    def healthy(self) -> bool:
        return True

    def describe(self) -> dict[str, object]:
        return {"sent": len(self.sent)}


class FakeClassifier:
    """Every text gets the label 'joy'."""

    identity = ModelIdentity("fake-embedder", "fake-head", "0" * 12, "cls")

    def classify(self, texts: list[str], timing: Timing | None = None) -> list[Result]:
        return [self._result() for _ in texts]

    def classify_stream(self, texts: list[str], timing: Timing | None = None) -> Any:
        yield list(enumerate(self.classify(texts)))

    @staticmethod
    def _result() -> Result:
        scores = {label: 0.9 if label == "joy" else 0.1 for label in LABELS}
        return Result(labels=["joy"], scores=scores, no_label=False, truncated=False, tokens=3,
                      thresholds_hash="0" * 12)
