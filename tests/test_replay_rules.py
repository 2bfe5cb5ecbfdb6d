"""replay-dead-letters' rules in-process, with a fake dead-letter consumer and a fake sender:
chunks, commit only after acknowledgement, the loop guard, not-replayable (cut) dead letters,
selection by class and time (and what it left out, by class), the replay group of a selection,
where a replay starts, dry run, stop and a refused commit."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from typing import Any

import orjson
import pytest
from confluent_kafka import OFFSET_BEGINNING, KafkaError, KafkaException, TopicPartition

from worker.ops.replay import Replay, ReplayOptions, ReplaySummary, default_group, format_summary
from worker.stream.publish import Outgoing
from worker.stream.records import (
    ERROR_HEADER,
    REPLAY_COUNT_HEADER,
    Record,
    cut_value,
    dead_letter_record,
)
from worker.stream.types import Envelope, Header, Rejected, Source

DLQ, TARGET = "dlq", "chat"
T0 = 1_800_000_000_000  # the dead letters' Kafka timestamps are T0 + offset * 1000


def dead_letter(offset: int, reason: str = "missing_text", *, replays: int = 0, cut: bool = False,
                partition: int = 0) -> FakeDeadLetter:
    headers: list[Header] = [("trace", f"t{offset}".encode())]
    if replays:
        headers.append((REPLAY_COUNT_HEADER, str(replays).encode()))
    value = orjson.dumps({"id": f"m{partition}-{offset}", "body": "x" * 50})
    env = Envelope(Source("chat", partition, 1000 + offset, T0), f"k{offset}".encode(), headers, value)
    rec = dead_letter_record(Rejected(env, reason, "some detail"), max_record_bytes=1_000_000)
    if cut:
        rec = cut_value(rec, 10)
    return FakeDeadLetter(partition, offset, rec, T0 + offset * 1000)


@dataclass
class FakeDeadLetter:
    partition_: int
    offset_: int
    record: Record
    ts: int
    err: KafkaError | None = None

    def error(self) -> KafkaError | None:
        return self.err

    def partition(self) -> int:
        return self.partition_

    def offset(self) -> int:
        return self.offset_

    def timestamp(self) -> tuple[int, int]:
        return 1, self.ts

    def key(self) -> bytes | None:
        return self.record.key

    def value(self) -> bytes | None:
        return self.record.value

    def headers(self) -> list[Header]:
        return list(self.record.headers)


def eof(partition: int) -> FakeDeadLetter:
    return FakeDeadLetter(partition, -1, Record(None, b"", []), 0, KafkaError(KafkaError._PARTITION_EOF))


@dataclass
class FakeDeadLetterConsumer:
    """Partitions of dead letters read from where they were assigned, an end-of-partition event
    when a partition is read to its end; commits kept per partition. `log` is shared with the
    sender, so the order of acknowledgements and commits can be checked."""

    log: list[tuple[str, Any]]
    topic: dict[int, list[FakeDeadLetter]] = field(default_factory=dict)
    committed_offsets: dict[int, int] = field(default_factory=dict)
    refuse_commits: bool = False
    position: dict[int, int] = field(default_factory=dict)
    assigned_at: dict[int, int] = field(default_factory=dict)
    _eof_sent: set[int] = field(default_factory=set)

    def committed(self, partitions: list[TopicPartition], timeout: float = -1) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.committed_offsets.get(tp.partition, -1001))
                for tp in partitions]

    def assign(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            start = 0 if tp.offset == OFFSET_BEGINNING else tp.offset
            self.position[tp.partition] = self.assigned_at[tp.partition] = start

    def consume(self, num_messages: int = 1, timeout: float = -1) -> list[FakeDeadLetter]:
        out: list[FakeDeadLetter] = []
        for p, pos in self.position.items():
            left = [m for m in self.topic.get(p, []) if m.offset_ >= pos]
            rest = left[: num_messages - len(out)]
            out.extend(rest)
            if rest:
                self.position[p] = rest[-1].offset_ + 1
            elif not left and p not in self._eof_sent:
                self._eof_sent.add(p)
                out.append(eof(p))
        return out

    def pause(self, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.position.pop(tp.partition, None)
            self.log.append(("pause", tp.partition))

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool) -> list[TopicPartition]:
        assert asynchronous is False
        if self.refuse_commits:
            raise KafkaException(KafkaError(KafkaError.REBALANCE_IN_PROGRESS))
        done = {tp.partition: tp.offset for tp in offsets}
        self.log.append(("commit", done))
        self.committed_offsets.update(done)
        return offsets


class FakeReplaySender:
    """Keeps what was sent; `flush` plays the broker: it acknowledges every record handed over
    since, except those `refuse` names (by offset in the dead-letter topic: the `trace` header)."""

    def __init__(self, log: list[tuple[str, Any]], refuse: Iterable[str] = (), on_flush: Any = None) -> None:
        self.log = log
        self.sent: list[Outgoing] = []
        self.refuse = set(refuse)
        self.on_flush = on_flush
        self._pending: list[Outgoing] = []

    def send(self, item: Outgoing) -> None:
        self.sent.append(item)
        self._pending.append(item)

    def flush(self, timeout: float) -> int:
        left = 0
        for item in self._pending:
            if dict(item.record.headers).get("trace", b"").decode() in self.refuse:  # type: ignore[union-attr]
                left += 1
            else:
                item.on_ack()
                self.log.append(("ack", dict(item.record.headers)["trace"]))
        self._pending = []
        if self.on_flush is not None:
            self.on_flush()
        return left

    def traces(self) -> list[str]:
        return [dict(i.record.headers)["trace"].decode() for i in self.sent]  # type: ignore[union-attr]


class Rig:
    def __init__(self, *records: FakeDeadLetter, refuse: Iterable[str] = (), **options: Any) -> None:
        self.log: list[tuple[str, Any]] = []
        self.consumer = FakeDeadLetterConsumer(self.log)
        for r in records:
            self.consumer.topic.setdefault(r.partition_, []).append(r)
        self.sender = FakeReplaySender(self.log, refuse)
        self.stop = threading.Event()
        self.options = ReplayOptions(source_topic=DLQ, target_topic=TARGET, group_id="g-replay",
                                     idle_timeout_s=2.0, **options)

    def run(self, partitions: Iterable[int] = (0,)) -> ReplaySummary:
        return Replay(self.options, self.consumer, self.sender, list(partitions), self.stop).run()


def test_chunks_are_committed_only_after_all_their_records_are_acknowledged() -> None:
    rig = Rig(*(dead_letter(i) for i in range(7)), chunk=3)
    s = rig.run()
    assert s.complete and (s.read, s.selected, s.replayed) == (7, 7, 7)
    assert rig.sender.traces() == [f"t{i}" for i in range(7)]
    kinds = [kind for kind, _ in rig.log]
    assert kinds == ["ack"] * 3 + ["commit"] + ["ack"] * 3 + ["commit"] + ["ack", "commit"]
    assert [done for kind, done in rig.log if kind == "commit"] == [{0: 3}, {0: 6}, {0: 7}]


def test_an_unacknowledged_record_stops_the_replay_and_its_chunk_is_not_committed() -> None:
    rig = Rig(*(dead_letter(i) for i in range(9)), chunk=3, refuse={"t4"})
    s = rig.run()
    assert not s.complete and s.not_acknowledged == 1 and s.replayed == 3
    assert rig.consumer.committed_offsets == {0: 3}  # the second chunk is redone by the next run
    assert rig.sender.traces() == [f"t{i}" for i in range(6)]  # the third chunk was never started
    assert "not acknowledged 1" in format_summary(s, dry_run=False)


def test_replayed_records_are_the_originals_with_the_replay_count_raised() -> None:
    rig = Rig(dead_letter(0), dead_letter(1, replays=2), max_replays=3)
    assert rig.run().complete
    first, second = rig.sender.sent
    assert first.topic == TARGET and first.record.key == b"k0"
    assert orjson.loads(first.record.value) == {"id": "m0-0", "body": "x" * 50}
    assert first.record.headers == [("trace", b"t0"), (REPLAY_COUNT_HEADER, b"1")]
    assert second.record.headers == [("trace", b"t1"), (REPLAY_COUNT_HEADER, b"3")]


def test_the_loop_guard_skips_records_replayed_max_replays_times_and_counts_them() -> None:
    rig = Rig(dead_letter(0, replays=3), dead_letter(1, replays=2), dead_letter(2, replays=7), max_replays=3)
    s = rig.run()
    assert rig.sender.traces() == ["t1"]
    assert (s.selected, s.replayed, s.loop_guard_skipped) == (3, 1, 2) and not s.complete
    assert rig.consumer.committed_offsets == {0: 3}  # skipped records are done with: committed too


def test_a_dead_letter_whose_value_was_cut_is_never_re_produced() -> None:
    older = dead_letter(3, "too_large")
    reason = orjson.loads(dict(older.record.headers)[ERROR_HEADER] or b"{}")
    reason["value_truncated_to"] = 65536  # as workers before the whole-value dead letters said it
    older.record = Record(older.record.key, older.record.value,
                          [(k, orjson.dumps(reason) if k == ERROR_HEADER else v) for k, v in older.record.headers])
    rig = Rig(dead_letter(0, "too_large"), dead_letter(1, "too_large", cut=True), dead_letter(2), older)
    s = rig.run()
    assert rig.sender.traces() == ["t0", "t2"]
    assert s.not_replayable == {"too_large": 2} and s.replayed == 2 and not s.complete
    text = format_summary(s, dry_run=False)
    assert "not replayable (value cut) 2" in text and "too_large        3  (2 not replayable: value cut)" in text
    assert s.as_dict()["not_replayable"] == 2


def test_a_dry_run_counts_by_class_with_samples_and_produces_and_commits_nothing() -> None:
    records = [dead_letter(i, "invalid_json" if i % 2 else "missing_text") for i in range(10)]
    rig = Rig(*records, dead_letter(10, "too_large", cut=True), dry_run=True, samples=2)
    s = rig.run()
    assert rig.sender.sent == [] and rig.log == []
    assert s.by_class == {"missing_text": 5, "invalid_json": 5, "too_large": 1}
    assert s.not_replayable == {"too_large": 1}
    assert [x["offset"] for x in s.samples["invalid_json"]] == [1, 3]
    assert s.samples["missing_text"][0]["message"] == "some detail"
    assert "would replay 10; not replayable (value cut) 1" in format_summary(s, dry_run=True)


def test_selection_by_error_class_and_dead_letter_time() -> None:
    records = [dead_letter(i, "invalid_json" if i % 2 else "missing_text") for i in range(10)]
    rig = Rig(*records, error_classes=frozenset({"missing_text"}), since_ms=T0 + 2000, until_ms=T0 + 8000)
    s = rig.run()
    assert rig.sender.traces() == ["t2", "t4", "t6"]
    assert (s.read, s.selected, s.replayed) == (8, 3, 3) and s.complete
    # other classes and what came before --since are passed over; the first dead letter of --until
    # or later is where the group stops, so a later replay still finds it and what follows
    assert rig.consumer.committed_offsets == {0: 8}
    assert s.stopped_at_until == [0] and ("pause", 0) in rig.log
    text = format_summary(s, dry_run=False)
    assert "not selected (dead-lettered before --since): 1" in text
    assert "stopped at --until on partitions 0" in text


def test_a_replay_to_until_leaves_the_rest_for_the_next_run() -> None:
    """Dead letters 0-9 of one partition and 0-3 of another: a replay to --until T0+5000 replays
    0-4 of the first and all of the second; the next replay, without a window, replays 5-9."""
    first = [dead_letter(i) for i in range(10)]
    second = [dead_letter(i, partition=1) for i in range(4)]
    rig = Rig(*first, *second, until_ms=T0 + 5000, chunk=3)
    s = rig.run(partitions=[0, 1])
    assert sorted(rig.sender.traces()) == sorted(["t0", "t1", "t2", "t3", "t4", "t0", "t1", "t2", "t3"])
    assert rig.consumer.committed_offsets == {0: 5, 1: 4} and s.stopped_at_until == [0]
    rig.options = replace(rig.options, until_ms=None)
    rig.sender.sent.clear()
    rig.consumer._eof_sent.clear()
    rig.run(partitions=[0, 1])
    assert rig.sender.traces() == ["t5", "t6", "t7", "t8", "t9"]
    assert rig.consumer.committed_offsets == {0: 10, 1: 4}


@pytest.mark.parametrize(("options", "expected"), [
    ({}, {0: 4, 1: 0}),  # where this replay group stopped; the beginning where it never committed
    ({"from_beginning": True}, {0: 0, 1: 0}),
    ({"start_offsets": {1: 2}}, {0: 4, 1: 2}),
])
def test_where_a_replay_starts(options: dict[str, Any], expected: dict[int, int]) -> None:
    rig = Rig(*(dead_letter(i) for i in range(6)), *(dead_letter(i, partition=1) for i in range(3)), **options)
    rig.consumer.committed_offsets = {0: 4}
    rig.run(partitions=[0, 1])
    assert rig.consumer.assigned_at == expected
    expected_sent = [f"t{i}" for i in range(expected[0], 6)] + [f"t{i}" for i in range(expected[1], 3)]
    assert sorted(rig.sender.traces()) == sorted(expected_sent)


def test_a_stop_finishes_and_commits_the_chunk_in_hand_then_ends() -> None:
    rig = Rig(*(dead_letter(i) for i in range(9)), chunk=3)
    rig.sender.on_flush = rig.stop.set  # e.g. Ctrl-C while the first chunk was being acknowledged
    s = rig.run()
    assert s.interrupted and not s.complete and s.replayed == 3
    assert rig.consumer.committed_offsets == {0: 3}


def test_a_refused_commit_ends_the_replay_with_its_reason_not_a_traceback() -> None:
    rig = Rig(*(dead_letter(i) for i in range(3)))
    rig.consumer.refuse_commits = True
    s = rig.run()
    assert not s.complete and s.error is not None and "rebalance" in s.error.lower()
    assert "stopped: " in format_summary(s, dry_run=False)


def test_rate_limits_records_per_second() -> None:
    rig = Rig(*(dead_letter(i) for i in range(11)), rate=100.0)
    started = time.monotonic()
    assert rig.run().replayed == 11
    assert time.monotonic() - started >= 0.1  # 11 records at 100/s: 0.1 s after the first


def test_each_selection_of_classes_has_its_own_default_replay_group() -> None:
    assert default_group("emotion-worker", frozenset()) == "emotion-worker-replay"
    assert default_group("emotion-worker", frozenset({"too_large"})) == "emotion-worker-replay-too_large"
    assert default_group("g", frozenset({"too_large", "invalid_json"})) == "g-replay-invalid_json+too_large"
    assert default_group("g", {"invalid_json", "too_large"}) == default_group("g", {"too_large", "invalid_json"})


def test_what_a_selection_leaves_out_is_counted_by_class_and_said_in_the_summary() -> None:
    records = [dead_letter(0, "not_an_object"), dead_letter(1, "invalid_utf8"), dead_letter(2, "not_an_object"),
               dead_letter(3, "invalid_json"), dead_letter(4, "invalid_utf8")]
    rig = Rig(*records, error_classes=frozenset({"missing_text"}))
    s = rig.run()
    assert (s.read, s.selected, s.replayed) == (5, 0, 0) and s.complete
    assert s.unselected == {"not_an_object": 2, "invalid_utf8": 2, "invalid_json": 1}
    assert s.as_dict()["not_selected_by_class"] == {"not_an_object": 2, "invalid_utf8": 2, "invalid_json": 1}
    lines = format_summary(s, dry_run=False, options=rig.options).splitlines()
    assert lines[0].startswith("read 5 dead letters; selected 0; replayed 0;")
    assert lines[1] == "not selected (other classes): 5: invalid_utf8 2, not_an_object 2, invalid_json 1"
    assert lines[2].startswith("replay group g-replay: its position is committed after each chunk done")

    timed = Rig(*records, error_classes=frozenset({"invalid_utf8"}), since_ms=T0 + 2000, dry_run=True)
    s = timed.run()
    assert (s.selected, s.outside_window, s.unselected) == (1, 1, {"not_an_object": 2, "invalid_json": 1})
    text = format_summary(s, dry_run=True, options=timed.options)
    assert "not selected (dead-lettered before --since): 1" in text
    assert "replay group g-replay: nothing committed (dry run)" in text
