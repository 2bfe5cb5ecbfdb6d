"""Whether the brokers can be reached, told once and plainly: one line when none answers, at most
one summary line per `SUMMARY_EVERY_S` while that lasts (with a count), one line when they answer
again. librdkafka's own connection-failure lines and errors (hundreds a minute while a broker is
down) are absorbed into that story; the consumer and the producer of one cluster tell one story.

Each Kafka client gets a `ClientReport` (its error_cb, logger and stats_cb); the reports of clients
with the same bootstrap servers share one `BrokerStory`. "Down" is librdkafka's own verdict (all
brokers down); "up" is any broker connected, from the clients' statistics."""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
from confluent_kafka import KafkaError

from worker.observe.logs import AS_IS

SUMMARY_EVERY_S = 30.0

story_log = logging.getLogger("worker.brokers")
client_log = logging.getLogger("worker.kafka")
librdkafka_log = logging.getLogger("worker.kafka.librdkafka")

_CONNECTION_ERRORS = {KafkaError._TRANSPORT, KafkaError._RESOLVE}
_TRAILER = re.compile(r"\s*\((after \d+ms in state \w+|\d+ identical error).*\)\s*$")
# "[thrd:...]: ", "kafka:9092/1: ", "GroupCoordinator: ", "127.0.0.1:9092: " before the news
_NAMES = re.compile(r"^((\[thrd:[^\]]*\]|\S+/\S+|GroupCoordinator|\S+:\d+): )+")
_CONNECT_FAILED = re.compile(r"Connect to \S+ failed: ")


def failure_reason(text: str) -> str:
    """librdkafka's connection failure, without the broker name and timings: 'connection refused'."""
    reason = _TRAILER.sub("", text.strip())
    connect = _CONNECT_FAILED.search(reason)
    reason = reason[connect.end():] if connect else _NAMES.sub("", reason)
    if reason[1:2].islower():  # "Connection refused", not "SSL handshake failed"
        reason = reason[:1].lower() + reason[1:]
    return reason or "no answer"


class BrokerStory:
    """The reachability of one set of bootstrap servers, as every client of the process sees it."""

    def __init__(self, servers: str, *, summary_every_s: float = SUMMARY_EVERY_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.servers = servers
        self.summary_every_s = summary_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self.state = "unknown"  # until a client connects or librdkafka says all brokers are down
        self._down_since = 0.0
        self._last_line = 0.0
        self._reason = ""
        # failed attempts since the last line, per (client, "log" or "error"): librdkafka reports each
        # attempt as a log line and, unless identical to the one before, as an error
        self._failures: dict[tuple[str, str], int] = {}

    def reachable(self) -> bool:
        return self.state != "down"

    def absorbs_failures(self) -> bool:
        """Connection failures are part of this story (not lines of their own) until a broker
        has answered, and while none does."""
        return self.state != "up"

    def failed(self, client: str, via: str, reason: str) -> None:
        """A client's connection attempt failed, as its log (`via` "log") or its errors ("error") say."""
        with self._lock:
            self._reason = reason
            self._failures[client, via] = self._failures.get((client, via), 0) + 1
            now = self._clock()
            if self.state == "down" and now - self._last_line >= self.summary_every_s:
                story_log.warning("still cannot reach brokers %s after %.0f s (%s; %d failed connection attempts "
                                  "in the last %.0f s); retrying", self.servers, now - self._down_since,
                                  self._reason, self._attempts(), now - self._last_line, extra=AS_IS)
                self._last_line = now
                self._failures.clear()

    def _attempts(self) -> int:
        clients = {client for client, _ in self._failures}
        return sum(max(self._failures.get((c, "log"), 0), self._failures.get((c, "error"), 0)) for c in clients)

    def down(self, reason: str | None = None) -> None:
        """librdkafka: all brokers are down."""
        with self._lock:
            if self.state == "down":
                return
            self.state = "down"
            self._down_since = self._last_line = self._clock()
            self._reason = reason or self._reason or "no answer"
            self._failures.clear()
            story_log.warning("cannot reach brokers %s (%s); retrying", self.servers, self._reason, extra=AS_IS)

    def up(self) -> None:
        """A client is connected to a broker."""
        with self._lock:
            was, self.state = self.state, "up"
            if was == "down":
                story_log.info("brokers %s reachable again after %.0f s", self.servers,
                               self._clock() - self._down_since, extra=AS_IS)
            self._failures.clear()


class ClientReport:
    """One Kafka client's error_cb, logger and stats_cb: reachability goes to its story, the rest to
    the log (whose repeat filter collapses librdkafka's repeats)."""

    def __init__(self, story: BrokerStory, client: str, on_stats: Callable[[str], None] | None = None) -> None:
        self.story = story
        self.client = client
        self.on_stats = on_stats

    # error_cb
    def error(self, err: KafkaError) -> None:
        code = err.code()
        if code == KafkaError._ALL_BROKERS_DOWN:
            self.story.down()
        elif code in _CONNECTION_ERRORS and not err.fatal():
            self.story.failed(self.client, "error", failure_reason(err.str()))
            if not self.story.absorbs_failures():
                client_log.warning("kafka %s: %s", self.client, err.str())
        else:
            level = logging.ERROR if err.fatal() else logging.WARNING
            client_log.log(level, "kafka %s: %s", self.client, err.str())

    # logger: confluent_kafka calls logger.log(level, "%s [%s] %s", facility, client name, text)
    def log(self, level: int, msg: str, *args: Any) -> None:
        facility, text = (str(args[0]), str(args[2])) if len(args) == 3 else ("", msg % args if args else msg)
        if facility == "FAIL":
            self.story.failed(self.client, "log", failure_reason(text))
            if self.story.absorbs_failures():
                return
        librdkafka_log.log(level, msg, *args)

    # stats_cb
    def stats(self, stats_json: str) -> None:
        try:
            brokers = orjson.loads(stats_json).get("brokers", {})
        except orjson.JSONDecodeError:
            brokers = {}
        if any(b.get("state") == "UP" for b in brokers.values()):
            self.story.up()
        if self.on_stats is not None:
            self.on_stats(stats_json)


_stories: dict[str, BrokerStory] = {}
_stories_lock = threading.Lock()


def story_for(servers: str) -> BrokerStory:
    """The process's one story for these bootstrap servers."""
    with _stories_lock:
        return _stories.setdefault(servers, BrokerStory(servers))


def brokers_reachable(*servers: str) -> bool:
    """For /readyz: no cluster among these is known to be unreachable."""
    return all(story_for(s).reachable() for s in servers)
