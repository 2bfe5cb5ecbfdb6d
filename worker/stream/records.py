"""The output and dead-letter record formats (documented in the README; keep them stable)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from worker.engine.result import ModelIdentity, Result
from worker.stream.types import ChatMessage, Envelope, Header, Rejected

SCHEMA_VERSION = 1
DLQ_HEADER_PREFIX = "emotion-worker."
# The headers a dead letter adds to the original's; replay-dead-letters takes them off again.
ERROR_HEADERS = tuple(f"{DLQ_HEADER_PREFIX}{name}" for name in
                      ("error", "error.class", "source.topic", "source.partition", "source.offset"))
ERROR_HEADER, ERROR_CLASS_HEADER = ERROR_HEADERS[:2]  # the reason as JSON; its error class alone
# Set ("1") on a dead letter whose value was cut to fit the dead-letter topic: it cannot be replayed.
TRUNCATED_HEADER = f"{DLQ_HEADER_PREFIX}error.truncated"
# How often a record was replayed from the dead-letter topic; travels with it through the worker.
REPLAY_COUNT_HEADER = f"{DLQ_HEADER_PREFIX}replay-count"


@dataclass(frozen=True)
class Record:
    key: bytes | None
    value: bytes
    headers: list[Header]


def source_dict(envelope: Envelope) -> dict[str, Any]:
    s = envelope.source
    return {"topic": s.topic, "partition": s.partition, "offset": s.offset, "timestamp": s.timestamp_ms}


def output_record(
    message: ChatMessage,
    result: Result,
    identity: ModelIdentity,
    *,
    scores: str,
    decimals: int,
    processing_ms: float,
) -> Record:
    doc = {
        "schema": SCHEMA_VERSION,
        "id": message.id,
        "labels": result.labels,
        "scores": result.reported_scores(scores, decimals),
        "no_label": result.no_label,
        "truncated": result.truncated,
        "model": {
            "embedder": identity.embedder,
            "head": identity.head,
            "thresholds_hash": result.thresholds_hash,
        },
        "source": source_dict(message.envelope),
        "processing_ms": round(processing_ms, 3),
    }
    return Record(message.envelope.key, orjson.dumps(doc), list(message.envelope.headers))


def dead_letter_record(rejected: Rejected, *, max_record_bytes: int) -> Record:
    """The original key, value and headers, whole, plus the reason as headers (one JSON header with
    all of it, and one header per field). Only a record the dead-letter producer could not send
    (over its message.max.bytes) has its value cut to fit, and the cut is said (`cut_value`)."""
    env = rejected.envelope
    value = env.value or b""
    reason: dict[str, Any] = {
        "error_class": rejected.reason,
        "message": rejected.detail,
        "source": source_dict(env),
        "original_size": len(value) if env.value is not None else None,
    }
    values = (orjson.dumps(reason), rejected.reason.encode(), env.source.topic.encode(),
              str(env.source.partition).encode(), str(env.source.offset).encode())
    headers: list[Header] = [*env.headers, *zip(ERROR_HEADERS, values, strict=True)]
    record = Record(env.key, value, headers)
    if record_size(record) <= max_record_bytes:
        return record
    room = max_record_bytes - (record_size(record) - len(value)) - _CUT_NOTE_BYTES
    return cut_value(record, max(0, room))


# What a cut adds to a record: the flag header and two fields of the reason.
_CUT_NOTE_BYTES = 128


def record_size(record: Record) -> int:
    """The size librdkafka checks against message.max.bytes: value, key and serialized headers
    (each header's name and value with their varint lengths, at most 5 bytes each)."""
    headers = sum(len(k) + len(v or b"") + 10 for k, v in record.headers)
    return len(record.value) + len(record.key or b"") + headers


def cut_value(record: Record, size: int) -> Record:
    """The dead letter with its value cut to `size` bytes, the cut said in the reason
    (`truncated_to`, `original_size`) and flagged by TRUNCATED_HEADER. Such a record cannot be
    replayed: its value is no longer the input's."""
    headers = [(k, v) for k, v in record.headers if k != TRUNCATED_HEADER]
    for i, (name, raw) in enumerate(headers):
        if name == ERROR_HEADER:
            reason = orjson.loads(raw) if raw else {}
            if reason.get("original_size") is None:
                reason["original_size"] = len(record.value)
            reason["truncated_to"] = size
            headers[i] = (name, orjson.dumps(reason))
    return Record(record.key, record.value[:size], [*headers, (TRUNCATED_HEADER, b"1")])


def shrink_dead_letter(record: Record) -> Record | None:
    """For a dead letter whose size the broker refused: the same with half the value, or None
    when there is no value left to cut."""
    if not record.value:
        return None
    return cut_value(record, len(record.value) // 2)


def was_cut(headers: Sequence[Header]) -> bool:
    """A dead letter whose value is not the input's whole value (also as older workers said it)."""
    found = dict(headers)
    if found.get(TRUNCATED_HEADER) is not None:
        return True
    raw = found.get(ERROR_HEADER)
    try:
        reason = orjson.loads(raw) if raw else {}
    except orjson.JSONDecodeError:
        return False
    return isinstance(reason, dict) and ("truncated_to" in reason or "value_truncated_to" in reason)
