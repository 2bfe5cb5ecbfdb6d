"""`emotion-worker classify`: texts from arguments or stdin, one JSON object per text on stdout."""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import Any

import orjson

from worker.engine.engine import Engine

BATCH = 256


def parse_line(line: str, text_field: str = "text") -> tuple[str | None, str | None]:
    """(text, error): a JSON line (an object with a text field, or a JSON string) or a plain line."""
    stripped = line.strip()
    if not stripped:
        return None, "empty line"
    if stripped[0] in '{["' or stripped in ("null", "true", "false") or _is_number(stripped):
        try:
            doc = orjson.loads(stripped)
        except orjson.JSONDecodeError:
            return stripped, None  # looks like JSON but is not: a plain line after all
        if isinstance(doc, dict):
            text = doc.get(text_field)
            if not isinstance(text, str):
                return None, f"JSON object has no string {text_field!r} field"
        elif isinstance(doc, str):
            text = doc
        else:
            return None, f"JSON {type(doc).__name__} is not text"
        if not text.strip():
            return None, "empty text"
        return text, None
    return line.rstrip("\r\n"), None


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def classify_lines(engine: Engine, lines: Iterable[str], *, out: Any = None, from_args: bool = False) -> int:
    """Classify in chunks, printing in input order. Returns the number of failed lines."""
    out = out or sys.stdout
    failed = 0
    chunk: list[tuple[int, str | None, str | None]] = []

    def flush() -> None:
        texts = [t for _, t, _ in chunk if t is not None]
        results = iter(engine.classify(texts)) if texts else iter(())
        for n, text, error in chunk:
            doc: dict[str, Any]
            if text is None:
                doc = {"line": n, "error": error}
            else:
                r = next(results)
                doc = {"line": n, "text": text, "labels": r.labels, "scores": r.scores,
                       "no_label": r.no_label, "truncated": r.truncated}
            out.write(orjson.dumps(doc).decode() + "\n")
        out.flush()
        chunk.clear()

    for n, line in enumerate(lines, 1):
        if from_args:
            text, error = (line, None) if line.strip() else (None, "empty text")
        else:
            text, error = parse_line(line)
        failed += error is not None
        chunk.append((n, text, error))
        if len(chunk) >= BATCH:
            flush()
    if chunk:
        flush()
    return failed
