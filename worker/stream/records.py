"""The output and dead-letter record formats (documented in the README; keep them stable)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from worker.engine.result import ModelIdentity, Result
from worker.stream.decode import ChatMessage, Envelope, Header, Rejected

SCHEMA_VERSION = 1
DLQ_HEADER_PREFIX = "emotion-worker."
# The headers a dead letter adds to the original's; replay-dead-letters takes them off again.
ERROR_HEADERS = tuple(f"{DLQ_HEADER_PREFIX}{name}" for name in
                      ("error", "error.class", "source.topic", "source.partition", "source.offset"))
ERROR_HEADER, ERROR_CLASS_HEADER = ERROR_HEADERS[:2]  # the reason as JSON; its error class alone
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


def dead_letter_record(rejected: Rejected, *, max_value_bytes: int) -> Record:
    """The original key, value and headers, plus the reason as headers (one JSON header with all
    of it, and one header per field). A value over max_value_bytes is cut to that size and the
    cut is said in the reason, so an oversized input cannot block the dead-letter topic."""
    env = rejected.envelope
    value = env.value or b""
    reason: dict[str, Any] = {
        "error_class": rejected.reason,
        "message": rejected.detail,
        "source": source_dict(env),
        "original_size": len(value) if env.value is not None else None,
    }
    if len(value) > max_value_bytes:
        value = value[:max_value_bytes]
        reason["value_truncated_to"] = max_value_bytes
    values = (orjson.dumps(reason), rejected.reason.encode(), env.source.topic.encode(),
              str(env.source.partition).encode(), str(env.source.offset).encode())
    headers: list[Header] = [*env.headers, *zip(ERROR_HEADERS, values, strict=True)]
    return Record(env.key, value, headers)
