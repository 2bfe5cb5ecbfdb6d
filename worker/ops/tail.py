"""`emotion-worker tail`: a deployment's results (or dead letters) as one readable line each, or as
JSON. Reads by assigning partitions directly: it joins no consumer group and commits nothing, so it
never disturbs the workers or another reader.

Where it starts: the last `count` records of the topic (10 unless given; per partition, then the
last `count` of those by time), or with `from_beginning` the first offset of every partition (then
`count` bounds how many are shown). Without `follow` it stops at the end of every partition as it
was reached; with `follow` it waits for new records until stopped (or `count` shown, from the
beginning)."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, TopicPartition

from worker.config import KafkaSettings
from worker.errors import WorkerError
from worker.ops.brokers import REACH_TIMEOUT_S, ensure_reachable
from worker.stream.kafka_conf import consumer_conf
from worker.stream.records import ERROR_CLASS_HEADER, ERROR_HEADER, TRUNCATED_HEADER

DEFAULT_LAST = 10
PREVIEW_BYTES = 60
REASON_CHARS = 80  # a dead letter's reason, cut at a word boundary beyond this
# Errors a reader cannot wait out (others, such as a broker restart, librdkafka retries by itself).
GIVE_UP = (KafkaError.UNKNOWN_TOPIC_OR_PART, KafkaError.TOPIC_AUTHORIZATION_FAILED)


@dataclass(frozen=True)
class TailOptions:
    topic: str
    dead_letters: bool = False
    from_beginning: bool = False
    follow: bool = False
    count: int | None = None  # the last N (default 10), or with from_beginning at most the first N
    as_json: bool = False
    end_wait_s: float = 10.0  # without follow: how long to wait for a partition's end to be reached


def reader_conf(k: KafkaSettings) -> dict[str, Any]:
    """A consumer of the output cluster (where results and dead letters live) that joins no group
    and commits nothing: partitions are assigned, the group id is a throwaway one never used."""
    conf = consumer_conf(k)
    conf.pop("statistics.interval.ms", None)
    conf.update({"bootstrap.servers": k.output_bootstrap_servers or k.bootstrap_servers,
                 "group.id": f"emotion-worker-tail-{uuid.uuid4().hex[:8]}", "enable.partition.eof": True,
                 "auto.offset.reset": "earliest", "fetch.wait.max.ms": 100})
    return conf


def topic_partitions(conf: dict[str, Any], topic: str, *, timeout_s: float) -> list[int]:
    """The topic's partitions, from the cluster's full topic list: asking for one topic by name
    would create it on a cluster that auto-creates topics."""
    metadata = ensure_reachable(conf, timeout_s=timeout_s)
    found = metadata.topics.get(topic)
    if found is None or found.error is not None:
        raise WorkerError(f"topic {topic} does not exist on {conf['bootstrap.servers']}: check kafka.output_topic "
                          "/ kafka.dead_letter_topic (or --topic) and kafka.output_bootstrap_servers")
    return sorted(found.partitions)


def _when(msg: Message) -> str:
    _kind, ts = msg.timestamp()
    if ts <= 0:
        return "-" * 23
    return datetime.fromtimestamp(ts / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _header_pairs(msg: Message) -> list[tuple[str, bytes | None]]:
    raw = msg.headers() or []
    pairs = raw.items() if isinstance(raw, dict) else raw  # a consumed record's are a list of pairs
    return [(name, value.encode() if isinstance(value, str) else value) for name, value in pairs]


def _headers(msg: Message) -> dict[str, bytes]:
    return {name: value or b"" for name, value in _header_pairs(msg)}


def _preview(value: bytes | None) -> str:
    if value is None:
        return "(null value)"
    shown = repr(value[:PREVIEW_BYTES])
    return shown + (f" ... ({len(value)} bytes)" if len(value) > PREVIEW_BYTES else "")


def format_result(msg: Message, texts: Mapping[str, str] | None = None) -> str:
    """`time  partition:offset  id  label score, ...  processing ms (end to end ms)`; with `texts`
    (the demo), the message's text instead of its id."""
    where = f"p{msg.partition()}:{msg.offset()}"
    try:
        doc = orjson.loads(msg.value() or b"")
        labels = ", ".join(f"{lab} {float(doc['scores'][lab]):.2f}" for lab in doc["labels"]) or "(no label)"
        msg_id = str(doc["id"])
        latency = f"{float(doc['processing_ms']):.0f} ms"
        _kind, ts = msg.timestamp()
        source_ts = (doc.get("source") or {}).get("timestamp")
        if ts > 0 and isinstance(source_ts, int) and source_ts > 0:
            latency += f" ({ts - source_ts} ms end to end)"
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return f"{_when(msg)}  {where}  not a result record: {_preview(msg.value())}"
    shown = texts.get(msg_id) if texts is not None else None
    subject = f"{shown[:52]:<52}" if shown is not None else f"id={msg_id}"
    return f"{_when(msg)}  {where}  {subject}  {labels}  [{latency}]"


def clip(text: str, width: int = REASON_CHARS) -> str:
    """`text` on one line, at most `width` characters: cut at a word boundary, with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= width:
        return text
    head = text[:width - 1]
    space = head.rfind(" ")
    if space >= width // 2:  # a word boundary not too far back; else cut the long word itself
        head = head[:space]
    return head.rstrip(" ,;:") + "…"


def format_dead_letter(msg: Message) -> str:
    """`time  partition:offset  error class  from topic[partition]@offset  reason  | value preview`."""
    headers = _headers(msg)
    error_class = headers.get(ERROR_CLASS_HEADER, b"?").decode(errors="replace")
    detail, origin = "", ""
    try:
        reason = orjson.loads(headers.get(ERROR_HEADER, b"{}"))
        source = reason.get("source") or {}
        if source.get("topic") is not None:
            origin = f"from {source['topic']}[{source.get('partition')}]@{source.get('offset')}  "
        detail = clip(str(reason.get("message") or ""))
    except (orjson.JSONDecodeError, AttributeError):
        pass
    cut = "  (value cut to fit)" if headers.get(TRUNCATED_HEADER) == b"1" else ""
    return (f"{_when(msg)}  p{msg.partition()}:{msg.offset()}  {error_class:<15}  {origin}{detail}  "
            f"| value {_preview(msg.value())}{cut}")


def _value_json(value: bytes | None) -> dict[str, Any]:
    if value is None:
        return {"value": None}
    try:
        return {"value": orjson.loads(value)}
    except orjson.JSONDecodeError:
        pass
    try:
        return {"value": value.decode("utf-8"), "value_encoding": "text"}
    except UnicodeDecodeError:
        return {"value": base64.b64encode(value).decode(), "value_encoding": "base64"}


def _text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode(errors="replace")


def record_json(msg: Message) -> bytes:
    """The whole record as one JSON line: its place, timestamp, key, headers ([name, value] pairs,
    in order, repeats kept) and value (parsed JSON, else text, else base64, said by `value_encoding`)."""
    _kind, ts = msg.timestamp()
    doc: dict[str, Any] = {
        "topic": msg.topic(), "partition": msg.partition(), "offset": msg.offset(),
        "timestamp": ts if ts > 0 else None, "key": _text(msg.key()),
        "headers": [[name, _text(value)] for name, value in _header_pairs(msg)],
        **_value_json(msg.value()),
    }
    return orjson.dumps(doc)


class Tail:
    def __init__(self, conf: dict[str, Any], options: TailOptions, write: Callable[[str], None],
                 texts: Mapping[str, str] | None = None) -> None:
        self.conf = conf
        self.options = options
        self.write = write
        self.texts = texts
        self.shown = 0
        self.unfinished: list[int] = []  # partitions whose end was not reached (without follow)

    def line(self, msg: Message) -> str:
        if self.options.as_json:
            return record_json(msg).decode()
        return format_dead_letter(msg) if self.options.dead_letters else format_result(msg, self.texts)

    def _limit(self) -> int | None:
        """How many to show in all: from the beginning, `count` if given; the last N: no bound once
        the last N were shown (following)."""
        return self.options.count if self.options.from_beginning else None

    def _show(self, msg: Message) -> None:
        self.write(self.line(msg))
        self.shown += 1

    def run(self, stop: Any, *, timeout_s: float = REACH_TIMEOUT_S) -> int:
        """Show records until the end (or forever, following) or `stop` is set; returns how many."""
        o = self.options
        partitions = topic_partitions(self.conf, o.topic, timeout_s=timeout_s)
        consumer = Consumer(self.conf)
        try:
            if o.from_beginning:
                consumer.assign([TopicPartition(o.topic, p, OFFSET_BEGINNING) for p in partitions])
            else:
                consumer.assign(self._last_n_starts(consumer, partitions, timeout_s))
            self._read(consumer, set(partitions), stop)
        finally:
            consumer.close()
        return self.shown

    def _last_n_starts(self, consumer: Consumer, partitions: list[int], timeout_s: float) -> list[TopicPartition]:
        n = self.options.count if self.options.count is not None else DEFAULT_LAST
        starts = []
        for p in partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(self.options.topic, p), timeout=timeout_s)
            starts.append(TopicPartition(self.options.topic, p, max(low, high - n)))
        return starts

    def _read(self, consumer: Consumer, partitions: set[int], stop: Any) -> None:
        o = self.options
        limit = self._limit()
        last_n = None if o.from_beginning else (o.count if o.count is not None else DEFAULT_LAST)
        backlog: list[Message] = []  # the last N: held until every partition's end, then sorted by time
        at_end: set[int] = set()
        last_progress = time.monotonic()
        while not stop.is_set():
            if limit is not None and self.shown >= limit:
                return
            if not o.follow and at_end >= partitions:
                break
            if not o.follow and time.monotonic() - last_progress > o.end_wait_s:
                self.unfinished = sorted(partitions - at_end)
                break
            for msg in consumer.consume(500, timeout=0.2):
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        at_end.add(msg.partition() or 0)
                        last_progress = time.monotonic()
                        if last_n is not None and at_end >= partitions and backlog:
                            self._flush_backlog(backlog, last_n)
                            backlog = []
                    elif err.fatal() or err.code() in GIVE_UP:
                        raise WorkerError(f"reading {o.topic}: {err.str()}")
                    continue
                last_progress = time.monotonic()
                if last_n is not None and not at_end >= partitions:
                    backlog.append(msg)
                elif limit is None or self.shown < limit:
                    self._show(msg)
        if backlog and last_n is not None:
            self._flush_backlog(backlog, last_n)

    def _flush_backlog(self, backlog: list[Message], last_n: int) -> None:
        def order(msg: Message) -> tuple[int, int, int]:
            return msg.timestamp()[1], msg.partition() or 0, msg.offset() or 0

        for msg in sorted(backlog, key=order)[-last_n:] if last_n else []:
            self._show(msg)
