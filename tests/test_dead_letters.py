"""Dead letters keep the whole original (key, value, headers); only a record the producer or the
broker refuses for its size has its value cut, and the cut is said in the reason and a header."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, KafkaException

from worker.config import KafkaSettings
from worker.stream.kafka_conf import DEFAULT_MESSAGE_MAX_BYTES, idempotent_producer_conf, max_message_bytes
from worker.stream.publish import Outgoing, Publisher
from worker.stream.records import (
    ERROR_HEADER,
    TRUNCATED_HEADER,
    Record,
    dead_letter_record,
    record_size,
    shrink_dead_letter,
    was_cut,
)
from worker.stream.types import Envelope, Rejected, Source

SRC = Source("chat", 2, 41, 1_700_000_000_000)
BIG = b'{"id": "big", "text": "' + b"x" * 80_000 + b'"}'


def rejected(value: bytes | None, reason: str = "too_large") -> Rejected:
    return Rejected(Envelope(SRC, b"key-1", [("trace", b"t-1"), ("empty", None)], value), reason, "value is big")


def reason_of(record: Record) -> dict[str, Any]:
    raw = dict(record.headers)[ERROR_HEADER]
    assert raw is not None
    out: dict[str, Any] = orjson.loads(raw)
    return out


def test_a_value_over_the_input_limit_is_dead_lettered_whole() -> None:
    rec = dead_letter_record(rejected(BIG), max_record_bytes=DEFAULT_MESSAGE_MAX_BYTES)
    assert rec.value == BIG and rec.key == b"key-1"
    headers = dict(rec.headers)
    assert headers["trace"] == b"t-1" and "empty" in headers and headers["empty"] is None
    assert headers["emotion-worker.error.class"] == b"too_large"
    assert TRUNCATED_HEADER not in headers and not was_cut(rec.headers)
    reason = reason_of(rec)
    assert reason["original_size"] == len(BIG) and "truncated_to" not in reason
    assert reason["source"] == {"topic": "chat", "partition": 2, "offset": 41, "timestamp": 1_700_000_000_000}


def test_only_a_record_over_the_producers_limit_is_cut_and_says_so() -> None:
    limit = 30_000
    rec = dead_letter_record(rejected(BIG), max_record_bytes=limit)
    assert record_size(rec) <= limit
    assert 0 < len(rec.value) < len(BIG) and BIG.startswith(rec.value)
    assert dict(rec.headers)[TRUNCATED_HEADER] == b"1" and was_cut(rec.headers)
    reason = reason_of(rec)
    assert reason["truncated_to"] == len(rec.value) and reason["original_size"] == len(BIG)
    assert reason["error_class"] == "too_large"
    assert dict(rec.headers)["trace"] == b"t-1" and rec.key == b"key-1"  # the rest stays whole


def test_a_null_value_is_not_cut_and_older_cut_dead_letters_are_recognised() -> None:
    rec = dead_letter_record(rejected(None, "null_value"), max_record_bytes=1000)
    assert rec.value == b"" and reason_of(rec)["original_size"] is None and not was_cut(rec.headers)
    older = [(ERROR_HEADER, orjson.dumps({"error_class": "too_large", "value_truncated_to": 65536}))]
    assert was_cut(older)
    assert not was_cut([(ERROR_HEADER, b"{not json")])


def test_shrinking_halves_the_value_until_nothing_is_left() -> None:
    rec = dead_letter_record(rejected(b"0123456789"), max_record_bytes=DEFAULT_MESSAGE_MAX_BYTES)
    sizes = []
    current: Record | None = rec
    while current is not None:
        sizes.append(len(current.value))
        current = shrink_dead_letter(current)
    assert sizes == [10, 5, 2, 1, 0]
    last = dead_letter_record(rejected(b"0123456789"), max_record_bytes=DEFAULT_MESSAGE_MAX_BYTES)
    for _ in range(2):
        smaller = shrink_dead_letter(last)
        assert smaller is not None
        last = smaller
    assert reason_of(last)["truncated_to"] == 2 and reason_of(last)["original_size"] == 10
    assert [k for k, _ in last.headers].count(TRUNCATED_HEADER) == 1


def test_the_producer_limit_comes_from_the_config_and_idempotence_cannot_be_turned_off() -> None:
    assert max_message_bytes(KafkaSettings()) == DEFAULT_MESSAGE_MAX_BYTES
    assert max_message_bytes(KafkaSettings(producer={"message.max.bytes": "50000"})) == 50_000
    assert max_message_bytes(KafkaSettings(common={"message.max.bytes": "70000"})) == 70_000
    conf = idempotent_producer_conf({"linger.ms": "20", "enable.idempotence": "false", "acks": "1"})
    assert conf["linger.ms"] == "20" and conf["enable.idempotence"] is True and conf["acks"] == "all"


class SizeLimitedProducer:
    """A producer whose 'broker' refuses values over `limit` bytes (a delivery report with
    MSG_SIZE_TOO_LARGE), or, with `local=True`, whose produce() refuses them at once."""

    def __init__(self, limit: int, local: bool = False) -> None:
        self.limit, self.local = limit, local
        self.queue: list[tuple[bytes, Callable[[KafkaError | None, Any], None]]] = []
        self.delivered: list[bytes] = []
        self.tried: list[int] = []
        self.lock = threading.Lock()

    def produce(self, topic: str, *, value: bytes, key: bytes | None, headers: Any,
                on_delivery: Callable[[KafkaError | None, Any], None]) -> None:
        self.tried.append(len(value))
        if self.local and len(value) > self.limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        with self.lock:
            self.queue.append((value, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        with self.lock:
            due, self.queue = self.queue, []
        for value, report in due:
            if len(value) > self.limit:
                report(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE), None)
            else:
                self.delivered.append(value)
                report(None, None)
        return len(due)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return len(self.queue)

    def __len__(self) -> int:
        return len(self.queue)

    def purge(self, **_: Any) -> None:
        self.queue.clear()


@pytest.mark.parametrize("local", [False, True], ids=["broker-refuses", "producer-refuses"])
def test_a_dead_letter_refused_for_its_size_is_sent_again_with_its_value_cut(local: bool) -> None:
    fake = SizeLimitedProducer(limit=30_000, local=local)
    publisher = Publisher({}, make_producer=lambda _conf: fake)  # type: ignore[arg-type, return-value]
    acked: list[Record] = []
    item = Outgoing("dlq", "dead_letter", dead_letter_record(rejected(BIG), max_record_bytes=10**7),
                    lambda: acked.append(item.record), shrink=shrink_dead_letter)
    publisher.send(item)
    assert publisher.flush(5) == 0
    assert len(acked) == 1
    sent = acked[0]
    assert fake.tried == [len(BIG), len(BIG) // 2, len(BIG) // 4]  # halved until the broker took it
    assert fake.delivered == [sent.value] and BIG.startswith(sent.value)
    assert reason_of(sent)["truncated_to"] == len(BIG) // 4 and reason_of(sent)["original_size"] == len(BIG)
    assert was_cut(sent.headers)


def test_a_result_refused_for_its_size_is_retried_not_cut() -> None:
    fake = SizeLimitedProducer(limit=10)
    publisher = Publisher({}, make_producer=lambda _conf: fake)  # type: ignore[arg-type, return-value]
    acked: list[int] = []
    publisher.send(Outgoing("out", "output", Record(b"k", b"x" * 100, []), lambda: acked.append(1)))
    deadline = time.monotonic() + 0.5
    while time.monotonic() < deadline and len(fake.tried) < 2:
        publisher.flush(0.1)
    assert not acked and set(fake.tried) == {100} and len(fake.tried) >= 2  # retried whole, with backoff
    assert publisher.pending_retries() + len(fake) == 1
