"""The worker as a real process against a real broker (Tansu): every message accounted for."""

from __future__ import annotations

import signal
import time
from collections import Counter, defaultdict
from pathlib import Path

import orjson
from confluent_kafka import Message

from testkit.faults import metric
from testkit.kafka import Topics, WorkerProcess, committed, end_offsets, produce, read_all, read_present, start_worker
from testkit.wait import wait_until
from worker.devtools.broker import LocalBroker

BAD_VALUES = [
    b"not json",
    b'{"id": "B1", "text": ""}',
    b'["list"]',
    b'{"id": "B3", "text": 7}',
    b"\xff\xfe\xfa",
    b'{"id": "B5"}',
    b'{"id": "B6", "text": "   "}',
    b"null",
    b'{"id": "B8", "text": "' + b"x" * 70_000 + b'"}',
]


def mixed_records(n: int) -> tuple[list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]]]], int]:
    records = []
    bad = 0
    for i in range(n):
        key = f"room{i % 7}".encode()
        headers = [("trace", f"t{i}".encode())]
        if i % 10 == 9:
            value = BAD_VALUES[(i // 10) % len(BAD_VALUES)]
            headers.append(("msg-index", str(i).encode()))
            bad += 1
        else:
            value = orjson.dumps({"id": f"m{i}", "text": f"message number {i}: thanks, that was great fun"})
        records.append((key, value, headers))
    return records, bad


def index_of(msg: Message, is_dlq: bool) -> int:
    headers = dict(msg.headers() or [])
    if is_dlq:
        return int(headers["msg-index"])
    return int(orjson.loads(msg.value())["id"][1:])


def test_every_message_accounted_for(broker: LocalBroker, tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    topics = Topics.fresh(broker, partitions=3)
    records, bad = mixed_records(400)
    produce(broker.bootstrap, topics.input, records)
    worker = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "w.log")
    try:
        outputs = read_all(broker.bootstrap, topics.output, expect=400 - bad, timeout=90)
        dlq = read_all(broker.bootstrap, topics.dlq, expect=bad, timeout=30)
    finally:
        rc = worker.stop()
    assert rc == 0, worker.log()[-3000:]
    seen = Counter([index_of(m, False) for m in outputs] + [index_of(m, True) for m in dlq])
    assert sorted(seen) == list(range(400)), "missing or extra messages"
    assert all(c == 1 for c in seen.values())
    assert len(dlq) == bad

    # Keys and headers are kept; the output carries the documented fields.
    by_index = {index_of(m, False): m for m in outputs}
    for i, m in by_index.items():
        key, _, _headers = records[i]
        assert m.key() == key
        assert ("trace", f"t{i}".encode()) in (m.headers() or [])
        doc = orjson.loads(m.value())
        assert set(doc) >= {"id", "labels", "scores", "no_label", "truncated", "model", "source", "processing_ms"}
        assert len(doc["scores"]) == 28
        assert doc["model"]["thresholds_hash"]
    # Dead letters keep key, value and headers, and say why.
    reasons = Counter()
    for m in dlq:
        i = index_of(m, True)
        key, value, _ = records[i]
        assert m.key() == key
        h = dict(m.headers() or [])
        assert h["trace"] == f"t{i}".encode()
        reason = orjson.loads(h["emotion-worker.error"])
        assert reason["source"]["topic"] == topics.input
        reasons[reason["error_class"]] += 1
        if reason["error_class"] != "too_large":
            assert m.value() == value
    assert set(reasons) >= {"invalid_json", "empty_text", "not_an_object", "text_not_string", "invalid_utf8",
                            "missing_text", "too_large"}

    # Per source partition, outputs appear in input order.
    last: dict[int, int] = defaultdict(lambda: -1)
    for m in sorted(outputs, key=lambda m: (m.partition(), m.offset())):
        src = orjson.loads(m.value())["source"]
        # within one output partition, a given source partition's offsets only grow
        key = (m.partition(), src["partition"])
        assert src["offset"] > last[key]  # type: ignore[index]
        last[key] = src["offset"]  # type: ignore[index]

    # Everything acknowledged was committed at shutdown.
    ends = end_offsets(broker.bootstrap, topics.input, 400)
    assert committed(broker.bootstrap, topics.group, topics.input, 3) == ends


def test_two_workers_share_a_topic(broker: LocalBroker, tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    topics = Topics.fresh(broker, partitions=4)
    a = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "a.log")
    b = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "b.log")
    def has_partitions(w: WorkerProcess) -> bool:
        return any(" assigned " in line and "(none)" not in line for line in w.log().splitlines())

    try:
        wait_until(lambda: has_partitions(a) and has_partitions(b), 30)  # both joined the group
        records = [(f"k{i}".encode(), orjson.dumps({"id": f"m{i}", "text": f"hello {i}"}), []) for i in range(800)]
        produce(broker.bootstrap, topics.input, records)
        outputs = read_all(broker.bootstrap, topics.output, expect=800, timeout=90)
    finally:
        assert a.stop() == 0
        assert b.stop() == 0
    ids = {orjson.loads(m.value())["id"] for m in outputs}
    assert ids == {f"m{i}" for i in range(800)}
    for w in (a, b):
        assert has_partitions(w), f"worker never got partitions:\n{w.log()[-2000:]}"


def test_sigterm_mid_stream_and_restart_loses_nothing(broker: LocalBroker, tiny_encoder: Path, tiny_head: Path,
                                                      tmp_path: Path) -> None:
    topics = Topics.fresh(broker, partitions=3)
    n = 4000  # stopped once 500 are published: on this machine ~1000 more a second
    records = [(f"k{i % 5}".encode(), orjson.dumps({"id": f"m{i}", "text": f"message {i} " + "word " * (i % 20)}),
                [])
               for i in range(n)]
    produce(broker.bootstrap, topics.input, records)
    log = tmp_path / "w.log"
    worker = start_worker(broker, topics, tiny_encoder, tiny_head, log)
    # Mid-stream: results published (and committed every 200 ms), most of the stream still to do.
    wait_until(lambda: metric(worker, "emotion_worker_messages_published_total") >= 500, 60, interval=0.02)
    worker.signal(signal.SIGTERM)
    started = time.monotonic()
    assert worker.wait(timeout=30) == 0
    assert time.monotonic() - started < 25
    partial = read_present(broker.bootstrap, topics.output)
    assert 0 < len(partial) < n, "stop was not mid-stream; make the stream longer"
    worker.start()
    try:
        outputs = read_all(broker.bootstrap, topics.output, expect=n, timeout=120)
    finally:
        assert worker.stop() == 0
    ids = Counter(orjson.loads(m.value())["id"] for m in outputs)
    assert set(ids) == {f"m{i}" for i in range(n)}, "messages lost across SIGTERM + restart"
