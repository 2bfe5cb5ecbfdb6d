"""Sample chat messages for a topic: lines from `worker/data/sample_chat.txt` as the worker's input
JSON, every 25th message broken on purpose (to show dead letters), paced at a rate or as fast as
the producer takes them, with every delivery report counted."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, MutableMapping
from dataclasses import dataclass
from importlib import resources
from typing import Any

import orjson
from confluent_kafka import KafkaError, Message, Producer

from worker.config import KafkaSettings
from worker.stream.kafka_conf import producer_conf

BROKEN = [b"not json at all", b'{"id": "x", "text": ""}', b'["a list"]', b'{"id": "y", "text": 42}', b"\xff\xfe"]
BROKEN_EVERY = 25


def sample_lines() -> list[str]:
    text = resources.files("worker").joinpath("data/sample_chat.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


@dataclass(frozen=True)
class Sample:
    key: bytes
    value: bytes
    broken: bool
    id: str | None = None
    text: str | None = None


def samples(seed: int = 7) -> Iterator[Sample]:
    """Endless: `{"id": "m<n>", "text": ..., "user": ...}` keyed by room, or a broken value."""
    lines = sample_lines()
    rng = random.Random(seed)
    n = 0
    while True:
        n += 1
        key = f"room{n % 3}".encode()
        if n % BROKEN_EVERY == 0:
            yield Sample(key, rng.choice(BROKEN), broken=True)
            continue
        text, msg_id = rng.choice(lines), f"m{n}"
        value = orjson.dumps({"id": msg_id, "text": text, "user": f"user{rng.randint(1, 9)}"})
        yield Sample(key, value, broken=False, id=msg_id, text=text)


def input_producer_conf(k: KafkaSettings) -> dict[str, Any]:
    """A producer for the input topic: the input's cluster, the configured client properties
    (kafka.common, kafka.producer), deliveries given up after 30 s unless configured otherwise."""
    conf = {"linger.ms": 5, "message.timeout.ms": 30_000, **producer_conf(k)}
    conf["bootstrap.servers"] = k.bootstrap_servers
    return conf


@dataclass
class SendReport:
    topic: str
    produced: int = 0  # handed to the producer
    delivered: int = 0  # acknowledged by the cluster
    broken_delivered: int = 0
    failed: int = 0
    first_error: str | None = None

    @property
    def unconfirmed(self) -> int:
        """Produced, but neither acknowledged nor failed when the producer was flushed."""
        return self.produced - self.delivered - self.failed

    @property
    def complete(self) -> bool:
        return self.delivered == self.produced

    def summary(self) -> str:
        return f"sent {self.delivered} messages ({self.broken_delivered} broken on purpose) to {self.topic}"

    def problems(self) -> str | None:
        parts = []
        if self.failed:
            parts.append(f"{self.failed} not delivered (first: {self.first_error})")
        if self.unconfirmed:
            parts.append(f"{self.unconfirmed} not confirmed when the producer was closed")
        return "; ".join(parts) or None


def produce_samples(conf: dict[str, Any], topic: str, *, rate: float, stop: threading.Event, count: int = 0,
                    texts: MutableMapping[str, str] | None = None, flush_timeout_s: float = 30.0) -> SendReport:
    """Produce samples to `topic` at `rate` per second (0: as fast as the producer takes them) until
    `stop` is set or `count` were produced (0: no limit); then wait for their delivery reports.
    `texts`, when given, records id -> text (the demo shows the text beside its result)."""
    report = SendReport(topic)
    producer = Producer(conf)

    def delivered(broken: bool) -> Any:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                report.delivered += 1
                report.broken_delivered += broken
            else:
                report.failed += 1
                report.first_error = report.first_error or err.str()
        return on_delivery

    start = time.monotonic()
    for sample in samples():
        if stop.is_set() or (count and report.produced >= count):
            break
        if rate > 0:  # paced against the clock, so the rate holds however long produce() takes
            delay = start + report.produced / rate - time.monotonic()
            if delay > 0 and stop.wait(delay):
                break
        if texts is not None and sample.id is not None and sample.text is not None:
            texts[sample.id] = sample.text
        if not _enqueue(producer, topic, sample, delivered(sample.broken), stop):
            break
        report.produced += 1
        producer.poll(0)
    producer.flush(flush_timeout_s)
    return report


def _enqueue(producer: Producer, topic: str, sample: Sample, on_delivery: Any, stop: threading.Event) -> bool:
    """Hand one sample to the producer; while its local queue is full, serve delivery reports and
    retry. False when stopped before it could be queued."""
    while True:
        try:
            producer.produce(topic, value=sample.value, key=sample.key, on_delivery=on_delivery)
            return True
        except BufferError:
            producer.poll(0.1)
            if stop.is_set():
                return False
