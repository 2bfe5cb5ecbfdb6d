"""Decoding: every input becomes a message or a rejection with a reason; never an exception."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker.stream.decode import decode
from worker.stream.records import dead_letter_record
from worker.stream.types import ChatMessage, Envelope, Rejected, Source

SRC = Source("chat", 2, 41, 1_700_000_000_000)


def run(value: bytes | None, limit: int = 10_000) -> ChatMessage | Rejected:
    return decode(Envelope(SRC, b"k", [("h", b"v")], value), text_field="text", id_field="id", max_value_bytes=limit)


@pytest.mark.parametrize(("value", "reason"), [
    (None, "null_value"),
    (b"x" * 10_001, "too_large"),
    (b"\xff\xfe", "invalid_utf8"),
    (b"{not json", "invalid_json"),
    (b"123456789012345678901234567890", "not_an_object"),  # a huge number is still not an object
    (b"[" * 400 + b"]" * 400, "not_an_object"),  # deep nesting, within limits
    (b"[" * 1100 + b"]" * 1100, "invalid_json"),  # nesting past orjson's limit
    (b'"a string"', "not_an_object"),
    (b"[1, 2]", "not_an_object"),
    (b"null", "not_an_object"),
    (b'{"id": 1}', "missing_text"),
    (b'{"text": null}', "text_not_string"),
    (b'{"text": {"nested": "x"}}', "text_not_string"),
    (b'{"text": ""}', "empty_text"),
    (b'{"text": " \\t\\n "}', "empty_text"),
])
def test_rejections(value: bytes | None, reason: str) -> None:
    out = run(value)
    assert isinstance(out, Rejected)
    assert out.reason == reason
    assert out.detail


@pytest.mark.parametrize("text", ["hello", "emoji 😂🔥", "مرحبا بالعالم", "שלום", "ctrl \x01\x02 chars", "a" * 9000])
def test_accepted_texts(text: str) -> None:
    out = run(orjson.dumps({"id": "x1", "text": text}), limit=10_000)
    assert isinstance(out, ChatMessage)
    assert out.text == text and out.id == "x1"


def test_huge_numbers_beside_the_text_are_fine() -> None:
    out = run(b'{"text": "hi", "n": 123456789012345678901234567890, "f": 1e308}')
    assert isinstance(out, ChatMessage)


def test_missing_id_uses_coordinates() -> None:
    out = run(b'{"text": "hi"}')
    assert isinstance(out, ChatMessage) and out.id == "chat:2:41"


def test_dead_letter_keeps_original_and_reason() -> None:
    out = run(b"{broken")
    assert isinstance(out, Rejected)
    rec = dead_letter_record(out, max_record_bytes=1000)
    assert rec.key == b"k" and rec.value == b"{broken"
    headers = dict(rec.headers)
    assert headers["h"] == b"v"
    reason = orjson.loads(headers["emotion-worker.error"])
    assert reason["error_class"] == "invalid_json"
    assert reason["source"] == {"topic": "chat", "partition": 2, "offset": 41, "timestamp": 1_700_000_000_000}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes_never_raise(value: bytes) -> None:
    out = run(value)
    assert isinstance(out, (ChatMessage, Rejected))
    if isinstance(out, ChatMessage):
        assert out.text.strip()


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["text", "id", "other"]), json_values, max_size=3))
def test_random_objects_never_raise(doc: dict[str, object]) -> None:
    out = run(orjson.dumps(doc), limit=100_000)
    if isinstance(out, ChatMessage):
        assert isinstance(doc.get("text"), str)
    else:
        assert out.reason in {"missing_text", "text_not_string", "empty_text"}


@pytest.mark.parametrize(("value", "detail"), [
    (b'{"text": 5}', "'text' is an int, expected a string"),
    (b'{"text": ["x"]}', "'text' is a list, expected a string"),
    (b"[1]", "JSON value is a list, expected an object"),
])
def test_rejection_details_read_as_english(value: bytes, detail: str) -> None:
    out = run(value)
    assert isinstance(out, Rejected) and out.detail == detail
