"""The benchmark's plain worker (benchmarks/plain_worker.py) computes what the worker computes, and
runs end to end through a real broker: a wrong baseline would make the benchmark's ratio a lie."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from benchmarks.plain_e2e import plain_backlog, unique_texts
from benchmarks.plain_worker import PlainModel
from worker.engine.engine import Engine, EngineOptions

TEXTS = ["thank you so much!", "this is the worst day", "ok", "why would anyone do that?? " * 5, "lol"]


def test_plain_model_agrees_with_the_engine(tiny_encoder_mean: Path, tiny_head: Path) -> None:
    plain = PlainModel(tiny_encoder_mean, tiny_head, max_length=512)
    engine = Engine(EngineOptions(embedder=str(tiny_encoder_mean), head=str(tiny_head), cache_size=0))
    probs = plain.probabilities(TEXTS)
    expected, _, _ = engine.probabilities(TEXTS)
    np.testing.assert_allclose(probs, expected, atol=1e-4)
    for text, p, result in zip(TEXTS, probs, engine.classify(TEXTS), strict=True):
        assert plain.result(text, p)["labels"] == result.labels


def test_unique_texts() -> None:
    texts = unique_texts(["a", "b"], 5)
    assert texts == ["a (0)", "b (1)", "a (2)", "b (3)", "a (4)"]
    assert len(set(unique_texts(["same"] * 3, 100))) == 100


def test_plain_backlog_end_to_end(tiny_encoder_mean: Path, tiny_head: Path, tmp_path: Path) -> None:
    out = plain_backlog(tiny_encoder_mean, tiny_head, unique_texts(TEXTS, 100), tmp_path, timeout=60)
    assert out["messages"] == 100
    assert out["texts_per_s"] > 0
    assert "plain worker: 100 messages" in (tmp_path / "plain-worker.log").read_text()
