"""Replay dead letters: read the dead-letter topic, select records by error class and time, and
produce each one's original key, value and headers (without the worker's error headers, with a
replay count) to the input topic, or another.

At-least-once: records are replayed in chunks; a chunk's source offsets are committed for the
replay's own consumer group only after every record it produced is acknowledged. An interrupted
replay, run again, resumes from the last commit and redoes at most one chunk. A record already
replayed `max_replays` times is skipped and counted, so a poison message cannot loop forever.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, Message, Producer, TopicPartition
from tqdm import tqdm

from worker.errors import WorkerError
from worker.stream.records import ERROR_CLASS_HEADER, ERROR_HEADER, ERROR_HEADERS, REPLAY_COUNT_HEADER

log = logging.getLogger(__name__)

Header = tuple[str, bytes | None]


@dataclass(frozen=True)
class ReplayOptions:
    source_topic: str  # the dead-letter topic
    target_topic: str  # where the originals go back to (the input topic, by default)
    group_id: str  # the replay's own consumer group: its progress on the dead-letter topic
    error_classes: frozenset[str] = frozenset()  # empty: every class
    since_ms: int | None = None  # dead-lettered at or after (Kafka timestamp of the dead letter)
    until_ms: int | None = None  # dead-lettered before
    from_beginning: bool = False  # the whole topic, not from where this replay group stopped
    start_offsets: dict[int, int] = field(default_factory=dict)  # partition -> offset: start there instead
    max_replays: int = 3
    dry_run: bool = False
    chunk: int = 500  # records per produce-acknowledge-commit round
    rate: float = 0.0  # records produced per second at most (0: no limit)
    idle_timeout_s: float = 5.0  # stop when nothing new arrived for this long
    samples: int = 3  # per error class, in --dry-run


@dataclass
class ReplaySummary:
    read: int = 0
    selected: int = 0
    replayed: int = 0
    loop_guard_skipped: int = 0
    not_acknowledged: int = 0
    interrupted: bool = False
    by_class: Counter[str] = field(default_factory=Counter)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every selected record was replayed (for a dry run: would be)."""
        return not self.interrupted and self.loop_guard_skipped == 0 and self.not_acknowledged == 0

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "selected": self.selected, "replayed": self.replayed,
                "loop_guard_skipped": self.loop_guard_skipped, "not_acknowledged": self.not_acknowledged,
                "interrupted": self.interrupted, "complete": self.complete, "by_class": dict(self.by_class),
                "samples": self.samples}


def replay_count(headers: list[Header]) -> int:
    raw = dict(headers).get(REPLAY_COUNT_HEADER)
    try:
        return int(raw or 0)
    except ValueError:
        return 0


def original_headers(headers: list[Header], count: int) -> list[Header]:
    """The input's own headers, as the worker received them, with the replay count set to `count`."""
    kept = [(k, v) for k, v in headers if k not in ERROR_HEADERS and k != REPLAY_COUNT_HEADER]
    return [*kept, (REPLAY_COUNT_HEADER, str(count).encode())]


def error_class(headers: list[Header]) -> str:
    raw = dict(headers).get(ERROR_CLASS_HEADER)
    return raw.decode(errors="replace") if raw else "unknown"


class Replay:
    def __init__(self, options: ReplayOptions, consumer_conf: dict[str, Any], producer_conf: dict[str, Any],
                 stop: threading.Event | None = None) -> None:
        self.options = options
        self.stop = stop if stop is not None else threading.Event()
        self.consumer = Consumer({**consumer_conf, "group.id": options.group_id, "enable.auto.commit": False,
                                  "enable.auto.offset.store": False, "enable.partition.eof": True})
        self.producer = None if options.dry_run else Producer(
            {**producer_conf, "enable.idempotence": True, "acks": "all"})
        self.summary = ReplaySummary()
        self._pace_start: float | None = None
        self._paced = 0

    def run(self, progress: bool = True) -> ReplaySummary:
        parts = self._assign()
        eof: set[int] = set()
        last_new = time.monotonic()
        bar = tqdm(desc="replay" if not self.options.dry_run else "dry run", unit="rec", disable=not progress)
        try:
            while not self.stop.is_set() and len(eof) < len(parts):
                if time.monotonic() - last_new > self.options.idle_timeout_s:
                    log.info("nothing new for %.0fs: stopping", self.options.idle_timeout_s)
                    break
                msgs = self.consumer.consume(self.options.chunk, timeout=0.5)
                records = []
                for m in msgs:
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            eof.add(m.partition() or 0)
                        else:
                            log.warning("dead-letter topic: %s", err)
                        continue
                    eof.discard(m.partition() or 0)
                    records.append(m)
                if not records:
                    continue
                last_new = time.monotonic()
                if not self._replay_chunk(records):
                    break
                bar.update(len(records))
        finally:
            bar.close()
            self.summary.interrupted = self.stop.is_set()
            self.consumer.close()
        return self.summary

    def _assign(self) -> list[int]:
        topic = self.options.source_topic
        md = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None or not md.partitions:
            raise WorkerError(f"dead-letter topic {topic!r} not found ({md.error if md else 'no metadata'})")
        parts = sorted(md.partitions)
        committed = {tp.partition: tp.offset for tp in
                     self.consumer.committed([TopicPartition(topic, p) for p in parts], timeout=10)}
        if self.options.from_beginning:
            committed = {}
        starts = []
        for p in parts:
            offset = self.options.start_offsets.get(p, committed.get(p, -1))
            starts.append(TopicPartition(topic, p, offset if offset >= 0 else OFFSET_BEGINNING))
        self.consumer.assign(starts)
        log.info("reading %s from %s", topic, ", ".join(f"[{tp.partition}] {_where(tp.offset)}" for tp in starts))
        return parts

    def _replay_chunk(self, records: list[Message]) -> bool:
        """Produce the selected records, wait for every acknowledgement, then commit the chunk.
        False when something was not acknowledged (nothing of this chunk is committed then)."""
        o, s = self.options, self.summary
        failures: list[str] = []
        produced = 0
        ends: dict[int, int] = {}
        for m in records:
            s.read += 1
            ends[m.partition() or 0] = (m.offset() or 0) + 1
            headers: list[Header] = list(m.headers() or [])  # type: ignore[arg-type]
            cls = error_class(headers)
            _, ts = m.timestamp()
            if o.error_classes and cls not in o.error_classes:
                continue
            if (o.since_ms is not None and ts < o.since_ms) or (o.until_ms is not None and ts >= o.until_ms):
                continue
            s.selected += 1
            s.by_class[cls] += 1
            count = replay_count(headers)
            if count >= o.max_replays:
                s.loop_guard_skipped += 1
                continue
            if o.dry_run:
                self._sample(cls, m, headers, count)
                continue
            self._produce(m, original_headers(headers, count + 1), failures.append)
            produced += 1
            self._pace()
        if self.producer is not None and produced:
            left = self.producer.flush(60)
            if left or failures:
                s.not_acknowledged += max(left, len(failures))
                log.error("%d replayed records were not acknowledged (%s); this chunk is not committed: run the "
                          "replay again to retry it", max(left, len(failures)), failures[:1] or "timeout")
                return False
            s.replayed += produced
        if not o.dry_run:
            offsets = [TopicPartition(o.source_topic, p, off) for p, off in ends.items()]
            self.consumer.commit(offsets=offsets, asynchronous=False)
        return True

    def _produce(self, m: Message, headers: list[Header], on_error: Callable[[str], None]) -> None:
        assert self.producer is not None

        def delivered(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                on_error(err.str())

        while True:
            try:
                self.producer.produce(self.options.target_topic, value=m.value(), key=m.key(),
                                      headers=headers, on_delivery=delivered)  # type: ignore[arg-type]
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def _pace(self) -> None:
        """At most options.rate records a second, on average since the first."""
        if self.options.rate <= 0:
            return
        if self._pace_start is None:
            self._pace_start = time.monotonic()
        self._paced += 1
        ahead = self._pace_start + self._paced / self.options.rate - time.monotonic()
        if ahead > 0:
            self.stop.wait(ahead)

    def _sample(self, cls: str, m: Message, headers: list[Header], count: int) -> None:
        taken = self.summary.samples.setdefault(cls, [])
        if len(taken) >= self.options.samples:
            return
        raw = dict(headers).get(ERROR_HEADER)
        reason = orjson.loads(raw) if raw else {}
        taken.append({"partition": m.partition(), "offset": m.offset(), "message": reason.get("message"),
                      "replay_count": count, "value": (m.value() or b"")[:120].decode(errors="replace")})


def _where(offset: int) -> str:
    return "the beginning" if offset == OFFSET_BEGINNING else f"offset {offset}"


def format_summary(s: ReplaySummary, dry_run: bool) -> str:
    verb = "would replay" if dry_run else "replayed"
    replayed = s.selected - s.loop_guard_skipped if dry_run else s.replayed
    lines = [f"read {s.read} dead letters; selected {s.selected}; {verb} {replayed}; "
             f"skipped by the loop guard {s.loop_guard_skipped}; not acknowledged {s.not_acknowledged}"
             + ("; interrupted" if s.interrupted else "")]
    for cls, n in s.by_class.most_common():
        lines.append(f"  {cls:<16} {n}")
        for sample in s.samples.get(cls, []):
            lines.append(f"    [{sample['partition']}]@{sample['offset']} {sample['message']}: {sample['value']!r}")
    return "\n".join(lines)
