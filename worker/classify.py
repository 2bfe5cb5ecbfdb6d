"""`emotion-worker classify`: a filter. One JSON object per input line (or argument) on stdout, in
input order, always: the labels and scores, or `{"line": N, "error": ...}` for an input that
cannot be classified, while the rest go on."""

from __future__ import annotations

import os
import select
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import IO, Any, Protocol

import orjson

from worker.engine.result import Result
from worker.errors import WorkerError

BATCH = 256  # lines per engine call at most; fewer when the input pauses
READ_SIZE = 1 << 16
BOM = b"\xef\xbb\xbf"
# After '[', what makes a line JSON rather than text such as "[NAME] is right" (GoEmotions' own
# placeholder): the start of a JSON value, or ']'. Only '{' is enough on its own.
_ARRAY_VALUE_STARTS = frozenset('{["]-0123456789')


class TextClassifier(Protocol):
    """What classify needs of the engine (worker.engine.engine.Engine)."""

    def classify(self, texts: list[str]) -> list[Result]: ...


@dataclass(frozen=True)
class ClassifyOptions:
    text_field: str = "text"
    id_field: str = "id"
    scores: str = "all"  # "all" | "passing"
    decimals: int = 4
    top_k: int | None = None  # the K best scores instead
    echo: bool = False  # also print the text


@dataclass(frozen=True)
class Item:
    """One input: a text to classify, or why not; the id a JSON line carried."""

    text: str | None
    error: str | None = None
    id: Any = None


def parse_line(raw: bytes, options: ClassifyOptions) -> Item:
    """A line of stdin (bytes, its line ending optional): JSON when it starts with '{' (or like a
    JSON array), a JSON string when it is one, else plain text."""
    raw = raw.removeprefix(BOM).removesuffix(b"\n").removesuffix(b"\r")
    try:
        line = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Item(None, f"not valid UTF-8: byte 0x{raw[exc.start]:02x} at position {exc.start} ({exc.reason}); "
                          "re-encode the input as UTF-8")
    stripped = line.strip()
    if not stripped:
        return Item(None, "empty line")
    if stripped[0] == "{" or (stripped[0] == "[" and stripped[1:].lstrip()[:1] in _ARRAY_VALUE_STARTS):
        return _parse_json(stripped, options)
    if stripped[0] == '"':
        try:
            doc = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            doc = None  # text that starts with a quote
        if isinstance(doc, str):
            return _text_item(doc, options.text_field, None)
    return Item(line)


def _parse_json(stripped: str, options: ClassifyOptions) -> Item:
    try:
        doc = orjson.loads(stripped)
    except orjson.JSONDecodeError as exc:
        return Item(None, f"starts like JSON but is not valid JSON ({exc})")
    if not isinstance(doc, dict):
        return Item(None, f"a JSON {_json_type(doc)}: give one JSON object per line, "
                          f"with a {options.text_field!r} field")
    msg_id = doc.get(options.id_field)
    if options.text_field not in doc:
        return Item(None, f"JSON object has no {options.text_field!r} field (input.text_field)", msg_id)
    text = doc[options.text_field]
    if not isinstance(text, str):
        return Item(None, f"{options.text_field!r} is {_json_kind(text)}, expected a string", msg_id)
    return _text_item(text, options.text_field, msg_id)


def _json_type(doc: object) -> str:
    return "array" if isinstance(doc, list) else type(doc).__name__


def _json_kind(value: object) -> str:
    """A JSON value's kind with its article, as a user who wrote the JSON names it: "a number"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


def _text_item(text: str, field: str, msg_id: Any) -> Item:
    if not text.strip():
        return Item(None, f"{field!r} is empty or whitespace", msg_id)
    return Item(text, None, msg_id)


def parse_argument(text: str) -> Item:
    """A text given on the command line: always plain text."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # undecodable argv bytes arrive as lone surrogates
        return Item(None, "not valid UTF-8; pass UTF-8 text")
    return Item(text) if text.strip() else Item(None, "empty text")


def read_lines(stream: IO[bytes]) -> Iterator[bytes | None]:
    """The lines of a byte stream as they arrive; None where the input pauses (nothing more to
    read yet), so a filter can answer what it has before waiting. A stream without a file
    descriptor (in-memory) is read line by line and never pauses."""
    try:
        fd = stream.fileno()
    except (OSError, ValueError):  # io.UnsupportedOperation is both
        yield from stream
        return
    pending = bytearray()
    while True:
        if not select.select([fd], [], [], 0)[0]:
            yield None
        data = os.read(fd, READ_SIZE)
        if not data:
            break
        pending += data
        if b"\n" in data:
            *lines, rest = pending.split(b"\n")
            yield from map(bytes, lines)
            pending = rest
    if pending:
        yield bytes(pending)


def classify_texts(engine: TextClassifier, texts: list[str] | None, options: ClassifyOptions,
                   out: IO[str] | None = None) -> int:
    """The texts given, or stdin's lines when None, classified to `out` (stdout). Returns the
    number of inputs that could not be classified."""
    items: Iterable[Item | None]
    if texts is None:
        items = (None if raw is None else parse_line(raw, options) for raw in read_lines(stdin_bytes()))
    else:
        items = map(parse_argument, texts)
    return classify_items(engine, items, options, out or sys.stdout)


def stdin_bytes() -> IO[bytes]:
    """stdin as bytes (undecoded: each line is decoded on its own, so one bad line stays one)."""
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is None:
        raise WorkerError("stdin is closed or not a byte stream: pipe lines into 'classify -'")
    return buffer  # type: ignore[no-any-return]


def classify_items(engine: TextClassifier, items: Iterable[Item | None], options: ClassifyOptions, out: IO[str]) -> int:
    """Classify in chunks (cut at BATCH, or where the input pauses: a None item), writing one JSON
    line per item in input order. Returns the number of items that could not be classified."""
    failed = 0
    chunk: list[Item] = []
    line_no = 0
    for item in items:
        if item is not None:
            chunk.append(item)
            if len(chunk) < BATCH:
                continue
        if chunk:
            failed += _write_chunk(engine, chunk, line_no + 1, options, out)
            line_no += len(chunk)
            chunk = []
    if chunk:
        failed += _write_chunk(engine, chunk, line_no + 1, options, out)
    return failed


def _write_chunk(engine: TextClassifier, chunk: list[Item], first: int, options: ClassifyOptions, out: IO[str]) -> int:
    outcomes = iter(_classify(engine, [item.text for item in chunk if item.text is not None]))
    failed = 0
    for line_no, item in enumerate(chunk, first):
        outcome: Result | str = next(outcomes) if item.text is not None else str(item.error)
        failed += isinstance(outcome, str)
        out.write(orjson.dumps(_document(line_no, item, outcome, options)).decode() + "\n")
    out.flush()
    return failed


def _classify(engine: TextClassifier, texts: list[str]) -> list[Result | str]:
    """Results for texts; if the model fails, the texts one by one, with the error for those that fail."""
    if not texts:
        return []
    try:
        return list(engine.classify(texts))
    except Exception:  # narrowed down to the failing texts
        return [_classify_one(engine, text) for text in texts]


def _classify_one(engine: TextClassifier, text: str) -> Result | str:
    try:
        return engine.classify([text])[0]
    except Exception as exc:  # reported on that line; the rest go on
        return f"inference failed: {type(exc).__name__}: {exc}"


def _document(line_no: int, item: Item, outcome: Result | str, options: ClassifyOptions) -> dict[str, Any]:
    doc: dict[str, Any] = {"line": line_no}
    if item.id is not None:
        doc["id"] = item.id
    if isinstance(outcome, str):
        doc["error"] = outcome
        return doc
    if options.echo:
        doc["text"] = item.text
    doc.update(labels=outcome.labels,
               scores=outcome.reported_scores(options.scores, options.decimals, options.top_k),
               no_label=outcome.no_label, truncated=outcome.truncated)
    return doc
