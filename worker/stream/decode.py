"""Bytes -> a chat message, or the reason it must go to the dead-letter topic."""

from __future__ import annotations

import orjson

from worker.stream.types import ChatMessage, Envelope, Rejected


def decode(envelope: Envelope, *, text_field: str, id_field: str, max_value_bytes: int) -> ChatMessage | Rejected:
    value = envelope.value
    if value is None:
        return Rejected(envelope, "null_value", "message value is null (tombstone)")
    if len(value) > max_value_bytes:
        return Rejected(envelope, "too_large", f"value is {len(value)} bytes, limit is {max_value_bytes}")
    try:
        value.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Rejected(envelope, "invalid_utf8", f"value is not valid UTF-8: {exc}")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        return Rejected(envelope, "invalid_json", f"value is not JSON: {exc}")
    if not isinstance(doc, dict):
        return Rejected(envelope, "not_an_object", f"JSON value is {_a(type(doc).__name__)}, expected an object")
    if text_field not in doc:
        return Rejected(envelope, "missing_text", f"object has no {text_field!r} field")
    text = doc[text_field]
    if not isinstance(text, str):
        return Rejected(envelope, "text_not_string", f"{text_field!r} is {_a(type(text).__name__)}, expected a string")
    if not text.strip():
        return Rejected(envelope, "empty_text", f"{text_field!r} is empty or whitespace")
    msg_id = doc.get(id_field)
    if msg_id is None:  # no id: the message's coordinates identify it
        src = envelope.source
        msg_id = f"{src.topic}:{src.partition}:{src.offset}"
    return ChatMessage(envelope=envelope, id=msg_id, text=text)


def _a(noun: str) -> str:
    """'a list', 'an int'."""
    return f"{'an' if noun[:1] in 'aeiou' else 'a'} {noun}"
