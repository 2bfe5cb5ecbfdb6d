"""`emotion-worker classify` as a filter, run in-process on real (tiny) ONNX models: one output line
per input line, per-line errors, ids through, scores chosen and rounded as configured; and the
worker's own result record rounded the same way."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from testkit.cli import run_cli
from worker.classify import ClassifyOptions, Item, classify_items, parse_line, read_lines
from worker.engine.engine import Engine, EngineOptions
from worker.engine.result import ModelIdentity, Result
from worker.labels import LABELS
from worker.stream.records import output_record
from worker.stream.types import ChatMessage, Envelope, Source

ROOT = Path(__file__).resolve().parent.parent

MIXED: list[bytes] = [
    b"plain text line",
    b'{"text": "json line", "id": 3}',
    b"caf\xe9 latin-1, not UTF-8",
    b"{broken json",
    b"",
    b'{"id": "no-text"}',
    b"[NAME] is right, thanks",
    b'[{"text": "an array"}]',
    b'"a json string"',
    b"   ",
    b'{"text": 5, "id": 6}',
    b"last line\r",
]
ERRORS = {3: "UTF-8", 4: "not valid JSON", 5: "empty", 6: "no 'text' field", 8: "JSON array", 10: "empty",
          11: "'text' is a number"}


def model_args(tiny_encoder: Path, tiny_head: Path) -> list[str]:
    return ["--embedder", str(tiny_encoder), "--head", str(tiny_head)]


def docs_of(stdout: str) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in stdout.splitlines()]


@pytest.fixture(scope="module")
def engine(tiny_encoder: Path, tiny_head: Path) -> Engine:
    return Engine(EngineOptions(str(tiny_encoder), str(tiny_head)))


def test_mixed_stdin_one_line_each_errors_ids_no_text(tiny_encoder: Path, tiny_head: Path, engine: Engine) -> None:
    res = run_cli("classify", "-", *model_args(tiny_encoder, tiny_head), stdin=b"\n".join(MIXED) + b"\n")
    assert res.returncode == 1
    assert res.stderr.strip() == f"{len(ERRORS)} input(s) could not be classified (see their error objects)"
    docs = docs_of(res.stdout)
    assert [d["line"] for d in docs] == list(range(1, len(MIXED) + 1))
    for d in docs:
        n = d["line"]
        if n in ERRORS:
            assert set(d) <= {"line", "id", "error"} and ERRORS[n] in str(d["error"]), d
        else:
            assert "error" not in d and "text" not in d, d
    assert {d["line"]: d["id"] for d in docs if "id" in d} == {2: 3, 6: "no-text", 11: 6}
    ok = [d for d in docs if "error" not in d]
    texts = ["plain text line", "json line", "[NAME] is right, thanks", "a json string", "last line"]
    expected = engine.classify(texts)
    for d, r in zip(ok, expected, strict=True):
        assert d["labels"] == r.labels
        assert d["scores"] == {label: round(p, 4) for label, p in r.scores.items()}
        assert list(d["scores"]) == list(LABELS)
        assert d["no_label"] == r.no_label and d["truncated"] is False


def test_echo_and_arguments(tiny_encoder: Path, tiny_head: Path) -> None:
    res = run_cli("classify", "thanks!", "oh no", *model_args(tiny_encoder, tiny_head))
    assert res.returncode == 0 and res.stderr == ""
    assert [("text" in d) for d in docs_of(res.stdout)] == [False, False]
    res = run_cli("classify", "thanks!", "{not json, an argument}", "--echo", *model_args(tiny_encoder, tiny_head))
    assert res.returncode == 0
    assert [d["text"] for d in docs_of(res.stdout)] == ["thanks!", "{not json, an argument}"]
    res = run_cli("classify", "-", "--echo", *model_args(tiny_encoder, tiny_head),
                  stdin='{"text": "from json", "id": 1}\nplain\n')
    assert [(d.get("id"), d["text"]) for d in docs_of(res.stdout)] == [(1, "from json"), (None, "plain")]


def test_top_k_gives_the_k_best_best_first(tiny_encoder: Path, tiny_head: Path, engine: Engine) -> None:
    texts = ["what a lovely day", "I am so angry right now"]
    res = run_cli("classify", *texts, "--top-k", "3", *model_args(tiny_encoder, tiny_head))
    assert res.returncode == 0
    for d, r in zip(docs_of(res.stdout), engine.classify(texts), strict=True):
        best = sorted(r.scores, key=lambda label: -r.scores[label])[:3]
        assert list(d["scores"]) == best
        assert d["labels"] == r.labels
    res = run_cli("classify", "hi", "--top-k", "29", *model_args(tiny_encoder, tiny_head))
    assert res.returncode == 2 and "--top-k" in res.stderr


def test_passing_scores_from_the_environment(tiny_encoder: Path, tiny_head: Path, engine: Engine) -> None:
    texts = ["what a lovely day", "I am so angry right now", "ok"]
    # a global threshold in the middle of the tiny model's scores, so some labels pass and some do not
    probs = sorted(p for r in engine.classify(texts) for p in r.scores.values())
    middle = str(probs[len(probs) // 2])
    env = {"EMOTION_WORKER_OUTPUT__SCORES": "passing", "EMOTION_WORKER_MODEL__THRESHOLD": middle}
    res = run_cli("classify", *texts, *model_args(tiny_encoder, tiny_head), env=env)
    assert res.returncode == 0, res.stderr
    docs = docs_of(res.stdout)
    assert any(0 < len(d["labels"]) < 28 for d in docs)
    for d in docs:
        assert list(d["scores"]) == d["labels"]
        assert all(v >= float(middle) - 5e-5 for v in d["scores"].values())


def test_text_and_id_fields_from_the_environment(tiny_encoder: Path, tiny_head: Path) -> None:
    env = {"EMOTION_WORKER_INPUT__TEXT_FIELD": "body", "EMOTION_WORKER_INPUT__ID_FIELD": "msg_id"}
    stdin = '{"body": "hello", "msg_id": "m-1", "id": "other"}\n{"text": "hello", "msg_id": "m-2"}\n'
    res = run_cli("classify", "-", *model_args(tiny_encoder, tiny_head), env=env, stdin=stdin)
    assert res.returncode == 1
    first, second = docs_of(res.stdout)
    assert first["id"] == "m-1" and "labels" in first
    assert second == {"line": 2, "id": "m-2", "error": "JSON object has no 'body' field (input.text_field)"}


@pytest.mark.parametrize("decimals", ["2", "17"])
def test_decimals(tiny_encoder: Path, tiny_head: Path, engine: Engine, decimals: str) -> None:
    res = run_cli("classify", "what a lovely day", *model_args(tiny_encoder, tiny_head),
                  env={"EMOTION_WORKER_OUTPUT__DECIMALS": decimals})
    assert res.returncode == 0
    (doc,) = docs_of(res.stdout)
    (r,) = engine.classify(["what a lovely day"])
    assert doc["scores"] == {label: round(p, int(decimals)) for label, p in r.scores.items()}
    printed = re.findall(r'"[a-z]+":(\d\.\d+)', res.stdout)
    assert len(printed) == 28
    if decimals == "2":
        assert max(len(p) - 2 for p in printed) == 2
    else:
        assert doc["scores"] == r.scores  # full precision


def test_default_decimals_and_bad_setting(tiny_encoder: Path, tiny_head: Path) -> None:
    res = run_cli("classify", "what a lovely day", *model_args(tiny_encoder, tiny_head))
    printed = re.findall(r'"[a-z]+":(\d\.\d+)', res.stdout)
    assert len(printed) == 28 and max(len(p) - 2 for p in printed) == 4
    res = run_cli("classify", "hi", *model_args(tiny_encoder, tiny_head),
                  env={"EMOTION_WORKER_OUTPUT__DECIMALS": "0"})
    assert res.returncode == 2 and "decimals" in res.stderr.lower() and len(res.stderr.splitlines()) == 1


def test_exit_codes(tiny_encoder: Path, tiny_head: Path) -> None:
    assert run_cli("classify", "-", *model_args(tiny_encoder, tiny_head), stdin=b"").returncode == 0
    res = run_cli("classify", "-", *model_args(tiny_encoder, tiny_head), stdin=b"fine\nalso fine")
    assert res.returncode == 0 and len(res.stdout.splitlines()) == 2
    res = run_cli("classify", *model_args(tiny_encoder, tiny_head))
    assert res.returncode == 2 and res.stderr.startswith("error: give texts")


def test_parse_line_rules() -> None:
    opts = ClassifyOptions()
    assert parse_line(b"\xef\xbb\xbf{\"text\": \"bom\"}\r\n", opts) == Item("bom")
    assert parse_line(b"[NAME] thanks\n", opts) == Item("[NAME] thanks")
    assert parse_line(b'"quoted" she said', opts) == Item('"quoted" she said')
    assert parse_line(b"42", opts) == Item("42")
    assert parse_line(b"[1, 2", opts).error is not None
    assert parse_line(b'{"text": "  "}', opts).error == "'text' is empty or whitespace"


def test_read_lines_says_when_the_input_pauses() -> None:
    r, w = os.pipe()
    with os.fdopen(r, "rb", buffering=0) as reader:
        lines = read_lines(reader)
        os.write(w, b"one\ntw")
        assert next(lines) == b"one"
        assert next(lines) is None  # nothing more to read yet: answer what has come
        os.write(w, b"o\nthree")
        os.close(w)
        assert list(lines) == [b"two", b"three"]


class _Flaky:
    """An engine whose model fails on one text (what a broken model call looks like)."""

    def __init__(self, real: Engine) -> None:
        self.real = real

    def classify(self, texts: list[str]) -> list[Result]:
        if "boom" in texts:
            raise RuntimeError("model call failed")
        return self.real.classify(texts)


def test_a_text_the_model_fails_on_is_that_lines_error(engine: Engine) -> None:
    import io

    out = io.StringIO()
    items: list[Item | None] = [Item("fine"), Item("boom"), None, Item("after")]
    failed = classify_items(_Flaky(engine), items, ClassifyOptions(), out)
    docs = docs_of(out.getvalue())
    assert failed == 1 and [d["line"] for d in docs] == [1, 2, 3]
    assert docs[1] == {"line": 2, "error": "inference failed: RuntimeError: model call failed"}
    assert "labels" in docs[0] and "labels" in docs[2]


def test_streams_as_a_filter_and_stops_quietly_when_the_reader_goes(tiny_encoder: Path, tiny_head: Path) -> None:
    """A real process: each line is answered before the input ends; a closed stdout ends it
    without a traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOTION_WORKER_")}
    proc = subprocess.Popen([sys.executable, "-m", "worker", "classify", "-", *model_args(tiny_encoder, tiny_head)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    try:
        proc.stdin.write(b"first line\n")
        proc.stdin.flush()
        assert orjson.loads(proc.stdout.readline())["line"] == 1  # stdin still open
        proc.stdout.close()
        proc.stdin.write(b"more\n" * 5000)
        proc.stdin.close()
    except BrokenPipeError:
        pass  # it may already have gone
    assert proc.wait(timeout=60) == 1
    assert proc.stderr.read() == b""
    proc.stderr.close()


def test_worker_record_scores_rounded_labels_by_unrounded_order() -> None:
    scores = dict.fromkeys(LABELS, 0.01)
    # joy beats love before rounding; rounded to 2 decimals both read 0.57
    scores.update(joy=0.574999, love=0.5701234567, anger=0.123456789, grief=0.012345678901234568)
    result = Result(labels=["joy", "love"], scores=scores, no_label=False, truncated=False, tokens=5,
                    thresholds_hash="h")
    envelope = Envelope(Source("in", 0, 7, 1), b"k", [("h", b"v")], b"{}")
    message = ChatMessage(envelope, "id-1", "text")
    identity = ModelIdentity("e", "h", "h", "cls")

    record = output_record(message, result, identity, scores="all", decimals=2, processing_ms=1.23456)
    doc = orjson.loads(record.value)
    assert doc["scores"]["joy"] == doc["scores"]["love"] == 0.57 and doc["scores"]["anger"] == 0.12
    assert doc["labels"] == ["joy", "love"] and list(doc["scores"]) == list(LABELS)
    assert set(doc) == {"schema", "id", "labels", "scores", "no_label", "truncated", "model", "source",
                        "processing_ms"}
    assert all(isinstance(v, float) for v in doc["scores"].values())

    passing = orjson.loads(output_record(message, result, identity, scores="passing", decimals=4,
                                         processing_ms=1.0).value)
    assert passing["scores"] == {"joy": 0.575, "love": 0.5701}
    full = orjson.loads(output_record(message, result, identity, scores="all", decimals=17, processing_ms=1.0).value)
    assert full["scores"] == scores  # every digit, even of a small score
    assert len(record.value) < len(output_record(message, result, identity, scores="all", decimals=17,
                                                 processing_ms=1.0).value)
