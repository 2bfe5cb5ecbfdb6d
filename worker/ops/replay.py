"""Replay dead letters: read the dead-letter topic, select records by error class and time, and
produce each one's original key, value and headers (without the worker's error headers, with a
replay count) to the input topic, or another.

At-least-once: records are replayed in chunks; a chunk's source offsets are committed for the
replay's own consumer group only after every record it produced is acknowledged. That group
depends on the selection (`default_group`): `<group_id>-replay` for every class,
`<group_id>-replay-<class>[+<class>...]` for some, so replaying one class does not move another
selection past the dead letters it did not select (each class keeps its own position). An interrupted
replay, run again, resumes from the last commit and redoes at most one chunk. A record already
replayed `max_replays` times is skipped and counted, so a poison message cannot loop forever; a
dead letter whose value was cut (it did not fit the dead-letter topic) is never re-produced: it is
counted as not replayable.

The rules live in `Replay`, which is handed its consumer and its sender (the worker's own
`Publisher` in production: the same idempotent producer settings and send loop), so they are tested
with fakes; `open_replay` wires the real clients.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition
from tqdm import tqdm

from worker.config import KafkaSettings
from worker.errors import WorkerError
from worker.ops.brokers import REACH_TIMEOUT_S, ensure_reachable
from worker.stream.kafka_conf import consumer_conf, producer_conf
from worker.stream.publish import Outgoing, Publisher
from worker.stream.records import (
    ERROR_CLASS_HEADER,
    ERROR_HEADER,
    ERROR_HEADERS,
    REPLAY_COUNT_HEADER,
    Record,
    was_cut,
)
from worker.stream.types import Header

log = logging.getLogger(__name__)



def default_group(group_id: str, error_classes: frozenset[str] | set[str]) -> str:
    """The replay's consumer group unless --group: its own for each selection of error classes
    (`<group_id>-replay` for all, `<group_id>-replay-invalid_json+too_large` for two), so a replay
    of some classes leaves the others' position where it was."""
    return f"{group_id}-replay" + (f"-{'+'.join(sorted(error_classes))}" if error_classes else "")


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
    ack_timeout_s: float = 60.0  # how long a chunk's acknowledgements may take
    samples: int = 3  # per error class, in --dry-run


@dataclass
class ReplaySummary:
    read: int = 0
    selected: int = 0
    replayed: int = 0
    loop_guard_skipped: int = 0
    not_acknowledged: int = 0
    interrupted: bool = False
    error: str | None = None  # what stopped the replay early (a commit refused, say)
    by_class: Counter[str] = field(default_factory=Counter)  # selected, by error class
    unselected: Counter[str] = field(default_factory=Counter)  # read, not of a selected class, by class
    outside_window: int = 0  # read, of a selected class, dead-lettered before --since
    # Partitions left at their first dead letter of --until or later: not committed past, a later run reads it.
    stopped_at_until: list[int] = field(default_factory=list)
    not_replayable: Counter[str] = field(default_factory=Counter)  # value cut, by error class
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Every selected record was replayed (for a dry run: would be)."""
        return (not self.interrupted and self.error is None and self.loop_guard_skipped == 0
                and self.not_acknowledged == 0 and not self.not_replayable)

    def as_dict(self) -> dict[str, Any]:
        return {"read": self.read, "selected": self.selected, "replayed": self.replayed,
                "not_replayable": sum(self.not_replayable.values()),
                "not_replayable_by_class": dict(self.not_replayable),
                "loop_guard_skipped": self.loop_guard_skipped, "not_acknowledged": self.not_acknowledged,
                "interrupted": self.interrupted, "error": self.error, "complete": self.complete,
                "by_class": dict(self.by_class), "not_selected_by_class": dict(self.unselected),
                "outside_window": self.outside_window, "stopped_at_until": self.stopped_at_until,
                "samples": self.samples}


class DeadLetter(Protocol):
    """What the replay reads of a consumed record (confluent_kafka.Message)."""

    def error(self) -> KafkaError | None: ...
    def partition(self) -> int | None: ...
    def offset(self) -> int | None: ...
    def timestamp(self) -> tuple[int, int]: ...
    def key(self) -> bytes | None: ...
    def value(self) -> bytes | None: ...
    def headers(self) -> Any: ...


class DeadLetterConsumer(Protocol):
    """What the replay needs of its consumer (confluent_kafka.Consumer, or a test's fake)."""

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]: ...
    def assign(self, partitions: list[TopicPartition]) -> None: ...
    def consume(self, num_messages: int = 1, timeout: float = -1) -> Sequence[DeadLetter]: ...
    def commit(self, *, offsets: list[TopicPartition], asynchronous: Literal[False]) -> list[TopicPartition]: ...
    def pause(self, partitions: list[TopicPartition]) -> None: ...


class ReplaySender(Protocol):
    """What the replay needs of its producer side (worker.stream.publish.Publisher, or a fake):
    `send` hands a record over, its `on_ack` runs when the broker acknowledged it; `flush` waits
    and returns how many are still unacknowledged."""

    def send(self, item: Outgoing) -> None: ...
    def flush(self, timeout: float) -> int: ...


def replay_count(headers: list[Header]) -> int:
    raw = dict(headers).get(REPLAY_COUNT_HEADER)
    try:
        return int(raw or 0)
    except ValueError:
        return 0


def original_headers(headers: list[Header], count: int) -> list[Header]:
    """The input's own headers, as the worker received them, with the replay count set to `count`."""
    kept = [(k, v) for k, v in headers if not k.startswith(ERROR_HEADER) and k not in ERROR_HEADERS
            and k != REPLAY_COUNT_HEADER]
    return [*kept, (REPLAY_COUNT_HEADER, str(count).encode())]


def error_class(headers: list[Header]) -> str:
    raw = dict(headers).get(ERROR_CLASS_HEADER)
    return raw.decode(errors="replace") if raw else "unknown"


class _Acks:
    """Counts acknowledgements; they may arrive on another thread."""

    def __init__(self) -> None:
        self.n = 0
        self._lock = threading.Lock()

    def __call__(self) -> None:
        with self._lock:
            self.n += 1


class Replay:
    """The replay's rules over an injected consumer (already configured for the replay's group)
    and sender (None for a dry run). `partitions` are the dead-letter topic's."""

    def __init__(self, options: ReplayOptions, consumer: DeadLetterConsumer, sender: ReplaySender | None,
                 partitions: list[int], stop: threading.Event | None = None) -> None:
        if sender is None and not options.dry_run:
            raise ValueError("a replay that produces needs a sender")
        self.options = options
        self.consumer = consumer
        self.sender = sender
        self.partitions = sorted(partitions)
        self.stop = stop if stop is not None else threading.Event()
        self.summary = ReplaySummary()
        self._past_until: set[int] = set()  # partitions read up to --until
        self._pace_start: float | None = None
        self._paced = 0

    def run(self, progress: bool = False) -> ReplaySummary:
        self._assign()
        eof: set[int] = set()
        last_new = time.monotonic()
        bar = tqdm(desc="dry run" if self.options.dry_run else "replay", unit="rec", disable=not progress)
        try:
            while not self.stop.is_set() and len(eof | self._past_until) < len(self.partitions):
                if time.monotonic() - last_new > self.options.idle_timeout_s:
                    log.info("nothing new for %.1fs: stopping", self.options.idle_timeout_s)
                    break
                records = []
                for m in self.consumer.consume(self.options.chunk, timeout=0.5):
                    err = m.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            eof.add(m.partition() or 0)
                        else:
                            log.warning("dead-letter topic: %s", err.str())
                        continue
                    eof.discard(m.partition() or 0)
                    records.append(m)
                if not records:
                    continue
                last_new = time.monotonic()
                if not self._replay_chunk(records):
                    break
                bar.update(len(records))
        except KafkaException as exc:
            self.summary.error = _kafka_reason(exc)
            log.error("replay stopped: %s", self.summary.error)
        finally:
            bar.close()
            self.summary.interrupted = self.stop.is_set()
        return self.summary

    def _assign(self) -> None:
        topic, o = self.options.source_topic, self.options
        committed: dict[int, int] = {}
        if not o.from_beginning:
            try:
                done = self.consumer.committed([TopicPartition(topic, p) for p in self.partitions], timeout=10)
            except KafkaException as exc:
                raise WorkerError(f"cannot read where the replay group {o.group_id!r} stopped on {topic!r} "
                                  f"({_kafka_reason(exc)}): check that the cluster is up, then run it again") from None
            committed = {tp.partition: tp.offset for tp in done}
        starts = []
        for p in self.partitions:
            offset = o.start_offsets.get(p, committed.get(p, -1))
            starts.append(TopicPartition(topic, p, offset if offset >= 0 else OFFSET_BEGINNING))
        self.consumer.assign(starts)
        log.info("reading %s from %s", topic, ", ".join(f"[{tp.partition}] {_where(tp.offset)}" for tp in starts))

    def _select(self, m: DeadLetter, cls: str) -> bool:
        """By error class and by when it was dead-lettered (the dead letter's Kafka timestamp);
        what is left out is counted (by class, or as before --since)."""
        o = self.options
        if o.error_classes and cls not in o.error_classes:
            self.summary.unselected[cls] += 1
            return False
        if o.since_ms is not None and m.timestamp()[1] < o.since_ms:
            self.summary.outside_window += 1
            return False
        return True

    def _reached_until(self, m: DeadLetter) -> bool:
        """True for a dead letter of --until or later: its partition is done for this run, and is
        committed only up to it, so that a later replay still finds it and what follows."""
        until = self.options.until_ms
        return until is not None and m.timestamp()[1] >= until

    def _replay_chunk(self, records: list[DeadLetter]) -> bool:
        """Produce the selected records, wait for every acknowledgement, then commit the chunk.
        False when something was not acknowledged (nothing of this chunk is committed then)."""
        o, s = self.options, self.summary
        acks = _Acks()
        produced = 0
        ends: dict[int, int] = {}
        reached: list[int] = []
        for m in records:
            partition = m.partition() or 0
            if partition in self._past_until:
                continue
            if self._reached_until(m):
                self._past_until.add(partition)
                reached.append(partition)
                continue
            s.read += 1
            ends[partition] = (m.offset() or 0) + 1
            headers: list[Header] = list(m.headers() or [])
            cls = error_class(headers)
            if not self._select(m, cls):
                continue
            s.selected += 1
            s.by_class[cls] += 1
            if was_cut(headers):
                s.not_replayable[cls] += 1  # its value is not the input's: re-producing it would lose data
                continue
            count = replay_count(headers)
            if count >= o.max_replays:
                s.loop_guard_skipped += 1
                continue
            if o.dry_run or self.sender is None:
                self._sample(cls, m, headers, count)
                continue
            record = Record(m.key(), m.value() or b"", original_headers(headers, count + 1))
            self.sender.send(Outgoing(o.target_topic, "replay", record, acks))
            produced += 1
            self._pace()
        if produced and self.sender is not None:
            self.sender.flush(o.ack_timeout_s)
            missing = produced - acks.n
            if missing > 0:
                s.not_acknowledged += missing
                log.error("%d replayed records were not acknowledged within %.0fs; this chunk is not committed: "
                          "run the replay again to retry it", missing, o.ack_timeout_s)
                return False
            s.replayed += produced
        if not o.dry_run and ends:
            offsets = [TopicPartition(o.source_topic, p, off) for p, off in ends.items()]
            self.consumer.commit(offsets=offsets, asynchronous=False)
        if reached:
            self.consumer.pause([TopicPartition(o.source_topic, p) for p in reached])
            s.stopped_at_until = sorted(self._past_until)
        return True

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

    def _sample(self, cls: str, m: DeadLetter, headers: list[Header], count: int) -> None:
        taken = self.summary.samples.setdefault(cls, [])
        if len(taken) >= self.options.samples:
            return
        raw = dict(headers).get(ERROR_HEADER)
        try:
            reason = orjson.loads(raw) if raw else {}
        except orjson.JSONDecodeError:
            reason = {}
        taken.append({"partition": m.partition(), "offset": m.offset(),
                      "message": reason.get("message") if isinstance(reason, dict) else None,
                      "replay_count": count, "value": (m.value() or b"")[:120].decode(errors="replace")})


def _kafka_reason(exc: KafkaException) -> str:
    err = exc.args[0] if exc.args else exc
    return err.str() if isinstance(err, KafkaError) else str(err)


def _where(offset: int) -> str:
    return "the beginning" if offset == OFFSET_BEGINNING else f"offset {offset}"


def topic_partitions(metadata: Any, topic: str, *, what: str, setting: str) -> list[int]:
    """The partitions of `topic` in cluster metadata, or a WorkerError saying it is missing."""
    md = metadata.topics.get(topic)
    if md is None or md.error is not None or not md.partitions:
        why = md.error.str() if md is not None and md.error is not None else "no such topic"
        raise WorkerError(f"{what} {topic!r} not found ({why}): check {setting}")
    return sorted(md.partitions)


@contextmanager
def open_replay(k: KafkaSettings, options: ReplayOptions, stop: threading.Event | None = None,
                *, reach_timeout_s: float = REACH_TIMEOUT_S) -> Iterator[Replay]:
    """A Replay on real clients: dead letters are read where results go (kafka.output_bootstrap_servers,
    else kafka.bootstrap_servers), originals go back where input comes from (kafka.bootstrap_servers),
    through the worker's Publisher. Both clusters must answer within `reach_timeout_s`, and both
    topics exist, before anything is read."""
    dlq_side = k.model_copy(update={"bootstrap_servers": k.output_bootstrap_servers or k.bootstrap_servers})
    input_side = k.model_copy(update={"output_bootstrap_servers": None})
    cconf = {**consumer_conf(dlq_side), "group.id": options.group_id, "enable.partition.eof": True}
    cconf.pop("statistics.interval.ms", None)
    pconf = producer_conf(input_side)
    source_md = ensure_reachable(cconf, timeout_s=reach_timeout_s, what="the dead-letter topic's brokers")
    partitions = topic_partitions(source_md, options.source_topic, what="dead-letter topic",
                                  setting="kafka.dead_letter_topic or --from")
    unknown = sorted(set(options.start_offsets) - set(partitions))
    if unknown:
        raise WorkerError(f"--from-offset: {options.source_topic!r} has no partition {unknown[0]} "
                          f"(it has {', '.join(map(str, partitions))})")
    if not options.dry_run:
        same = cconf["bootstrap.servers"] == pconf["bootstrap.servers"]
        target_md = source_md if same else ensure_reachable(pconf, timeout_s=reach_timeout_s,
                                                            what="the input topic's brokers")
        topic_partitions(target_md, options.target_topic, what="topic to replay into",
                         setting="kafka.input_topic or --to")
    log.info("replay group %s", options.group_id)
    consumer = Consumer(cconf)
    sender = None if options.dry_run else Publisher(pconf)
    try:
        yield Replay(options, consumer, sender, partitions, stop)
    finally:
        consumer.close()
        if sender is not None:
            sender.close(10)


def format_summary(s: ReplaySummary, dry_run: bool, options: ReplayOptions | None = None) -> str:
    """The summary a user reads: the counts, the selected records by class (with samples in a dry
    run), what was read but not selected, and (given `options`) the replay group and what it means."""
    verb = "would replay" if dry_run else "replayed"
    cut = sum(s.not_replayable.values())
    replayed = s.selected - s.loop_guard_skipped - cut if dry_run else s.replayed
    lines = [f"read {s.read} dead letters; selected {s.selected}; {verb} {replayed}; "
             f"not replayable (value cut) {cut}; skipped by the loop guard {s.loop_guard_skipped}; "
             f"not acknowledged {s.not_acknowledged}" + ("; interrupted" if s.interrupted else "")
             + (f"; stopped: {s.error}" if s.error else "")]
    for cls, n in s.by_class.most_common():
        note = f"  ({s.not_replayable[cls]} not replayable: value cut)" if s.not_replayable[cls] else ""
        lines.append(f"  {cls:<16} {n}{note}")
        for sample in s.samples.get(cls, []):
            lines.append(f"    [{sample['partition']}]@{sample['offset']} {sample['message']}: {sample['value']!r}")
    if s.unselected:
        classes = ", ".join(f"{cls} {n}" for cls, n in sorted(s.unselected.items(), key=lambda kv: (-kv[1], kv[0])))
        lines.append(f"not selected (other classes): {sum(s.unselected.values())}: {classes}")
    if s.outside_window:
        lines.append(f"not selected (dead-lettered before --since): {s.outside_window}; the group passes over them "
                     "(--from-beginning reads them again)")
    if s.stopped_at_until:
        lines.append(f"stopped at --until on partitions {', '.join(map(str, s.stopped_at_until))}: "
                     "what was dead-lettered from then on is left for a later run")
    if options is not None:
        lines.append(_group_line(options, dry_run))
    return "\n".join(lines)


def _group_line(o: ReplayOptions, dry_run: bool) -> str:
    """The replay group: what this run did to its position on the dead-letter topic."""
    if dry_run:
        return f"replay group {o.group_id}: nothing committed (dry run)"
    return (f"replay group {o.group_id}: its position is committed after each chunk done; the next run with "
            "this group starts there (each --error-class selection has its own group; --from-beginning reads all)")
