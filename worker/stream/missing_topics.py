"""Topics the worker needs that the cluster does not have (yet), told plainly: one line when the
input topic is found missing (librdkafka's own `Subscribed topic not available` repeats are
absorbed), /readyz red while it is, one line when it appears; one line per output or dead-letter
topic that a produce finds missing (the publisher keeps retrying those records)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable
from typing import Protocol, TypeVar

from confluent_kafka import KafkaError, TopicPartition

from worker.observe.health import Health
from worker.observe.logs import AS_IS

log = logging.getLogger("worker.topics")

_MISSING = {KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError._UNKNOWN_TOPIC}
# how librdkafka says a produce found no such topic (the publisher hands on the text only)
_MISSING_WORDS = ("Unknown topic or partition", "Unknown topic")


class _Failed(Protocol):
    """What a failure report knows of the record (worker.stream.publish.Outgoing)."""

    topic: str
    kind: str


F = TypeVar("F", bound=_Failed)


class MissingTopics:
    def __init__(self, input_topic: str, servers: str, health: Health, *, output_servers: str | None = None) -> None:
        self.input_topic = input_topic
        self.servers = servers
        self.output_servers = output_servers or servers
        self.health = health
        self.input_missing = False
        self._told_outputs: set[str] = set()
        self._lock = threading.Lock()

    def consumer_error(self, err: KafkaError) -> bool:
        """A consumer error from poll: True when it says the input topic is missing (then told
        once, and readiness is red until it appears), False for any other error."""
        if err.code() not in _MISSING:
            return False
        if not self.input_missing:
            self.input_missing = True
            self.health.input_topic_missing = self.input_topic
            log.warning("input topic %s does not exist on %s yet; waiting for it (create it, or set "
                        "kafka.input_topic)", self.input_topic, self.servers, extra=AS_IS)
        else:
            log.debug("still no input topic %s: %s", self.input_topic, err.str())
        return True

    def assigned(self, partitions: Iterable[TopicPartition]) -> None:
        """Partitions of the input topic were assigned: it exists (again)."""
        if self.input_missing and any(p.topic == self.input_topic for p in partitions):
            self.input_missing = False
            self.health.input_topic_missing = ""
            log.info("input topic %s exists now on %s: consuming it", self.input_topic, self.servers, extra=AS_IS)

    def produce_failed(self, topic: str, kind: str, error: str) -> None:
        """A produce failed: when because `topic` does not exist, one line for that topic."""
        if not any(words in error for words in _MISSING_WORDS):
            return
        with self._lock:
            if topic in self._told_outputs:
                return
            self._told_outputs.add(topic)
        setting = "kafka.dead_letter_topic" if kind == "dead_letter" else "kafka.output_topic"
        log.warning("%s topic %s does not exist on %s: create it, or set %s; its records wait and are retried",
                    "dead-letter" if kind == "dead_letter" else "output", topic, self.output_servers, setting,
                    extra=AS_IS)

    def reporting(self, report: Callable[[F, str], None]) -> Callable[[F, str], None]:
        """The publisher's on_failure `report`, which also tells a missing output topic."""

        def on_failure(item: F, error: str) -> None:
            report(item, error)
            self.produce_failed(item.topic, item.kind, error)

        return on_failure
