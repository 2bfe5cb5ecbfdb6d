"""The engine against independent numpy computations, on real ONNX models."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from testkit.models import build_random_head
from worker.engine.engine import Engine, EngineOptions
from worker.engine.result import Timing
from worker.errors import ModelError
from worker.labels import LABELS
from worker.train.head_onnx import write_head

from .conftest import TINY

TEXTS = [
    "thanks so much, that really helped!",
    "lol",
    "I can't believe they did that, this is awful and I am furious about the whole thing " * 3,
    "what is going on?",
    "ok",
    "I love you all ❤️",
]


def engine(encoder: Path, head: Path, **kw: object) -> Engine:
    return Engine(EngineOptions(embedder=str(encoder), head=str(head), cache_size=0, **kw))  # type: ignore[arg-type]


def reference_vector(encoder: Path, text: str, pooling: str) -> np.ndarray:
    """Independent: one text, no padding, plain onnxruntime and numpy."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(encoder / "tokenizer.json"))
    tok.no_padding()
    tok.no_truncation()
    ids = np.array([tok.encode(text).ids], dtype=np.int64)
    sess = ort.InferenceSession(str(encoder / "model.onnx"), providers=["CPUExecutionProvider"])
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    if "token_type_ids" in {i.name for i in sess.get_inputs()}:
        feeds["token_type_ids"] = np.zeros_like(ids)
    hidden = sess.run(["last_hidden_state"], feeds)[0][0]
    vec = hidden[0] if pooling == "cls" else hidden.mean(axis=0)
    return vec / np.linalg.norm(vec)


def head_probs(layers: list[tuple[np.ndarray, np.ndarray]], vec: np.ndarray) -> np.ndarray:
    (w, b), = layers
    return 1 / (1 + np.exp(-(vec @ w + b)))


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "separate"])
@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_probabilities_match_numpy(tiny_encoder: Path, tiny_encoder_mean: Path, tmp_path: Path, pooling: str,
                                   fold: bool) -> None:
    encoder = tiny_encoder if pooling == "cls" else tiny_encoder_mean
    layers = build_random_head(tmp_path / "head", TINY["hidden"], seed=3)
    eng = engine(encoder, tmp_path / "head", fold_head=fold)
    assert eng.identity.pooling == pooling
    assert (eng.folded is not None) == fold
    probs, _, _ = eng.probabilities(TEXTS)
    for i, text in enumerate(TEXTS):
        expected = head_probs(layers, reference_vector(encoder, text, pooling))
        np.testing.assert_allclose(probs[i], expected, atol=1e-5)


@pytest.mark.parametrize("fold", [True, False], ids=["folded", "separate"])
def test_outputs_mapped_by_name_not_position(tiny_encoder: Path, tmp_path: Path, fold: bool) -> None:
    shuffled = list(LABELS)
    random.Random(5).shuffle(shuffled)
    assert shuffled != list(LABELS)
    layers = build_random_head(tmp_path / "shuffled", TINY["hidden"], seed=4, output_order=shuffled)
    build_random_head(tmp_path / "ordered", TINY["hidden"], seed=4)
    sess = ort.InferenceSession(str(tmp_path / "shuffled" / "model.onnx"))
    assert [o.name for o in sess.get_outputs()] == shuffled
    a = engine(tiny_encoder, tmp_path / "shuffled", fold_head=fold).probabilities(TEXTS)[0]
    b = engine(tiny_encoder, tmp_path / "ordered", fold_head=fold).probabilities(TEXTS)[0]
    np.testing.assert_allclose(a, b, atol=1e-6)
    expected = head_probs(layers, reference_vector(tiny_encoder, TEXTS[0], "cls"))
    np.testing.assert_allclose(a[0], expected, atol=1e-5)


def test_batch_independence_and_order(tiny_encoder: Path, tiny_head: Path) -> None:
    eng = engine(tiny_encoder, tiny_head, call_batch_size=4, token_budget=256)
    alone = eng.probabilities(["what is going on?"])[0][0]
    mixed = ["a " * 200, "what is going on?", "word " * 300, "hi"]
    together = eng.probabilities(mixed)[0]
    np.testing.assert_allclose(together[1], alone, atol=1e-5)
    # Order: each row equals that text classified alone.
    for i, text in enumerate(mixed):
        np.testing.assert_allclose(together[i], eng.probabilities([text])[0][0], atol=1e-5)


def test_results_labels_sorted_and_thresholds(tiny_encoder: Path, tmp_path: Path) -> None:
    head = tmp_path / "head"
    build_random_head(head, TINY["hidden"], seed=2)
    probs = engine(tiny_encoder, head).probabilities(["hello there"])[0][0]
    # Put a threshold exactly on one label's score: it must pass (>=), and one just above must not.
    j_on, j_off = int(np.argmax(probs)), int(np.argmin(probs))
    values = dict.fromkeys(LABELS, 1.0)
    values[LABELS[j_on]] = float(probs[j_on])
    values[LABELS[j_off]] = float(np.nextafter(probs[j_off], np.float32(2)))
    (head / "thresholds.json").write_text(json.dumps(values))
    result = engine(tiny_encoder, head).classify(["hello there"])[0]
    assert result.labels == [LABELS[j_on]]
    assert set(result.scores) == set(LABELS)
    assert not result.no_label
    everything = engine(tiny_encoder, head, threshold=0.0).classify(["hello there"])[0]
    assert len(everything.labels) == 28
    assert [everything.scores[x] for x in everything.labels] == sorted(everything.scores.values(), reverse=True)
    nothing = engine(tiny_encoder, head, threshold=1.0, label_thresholds={}).classify(["hello there"])[0]
    assert nothing.labels == [] and nothing.no_label
    one = engine(tiny_encoder, head, threshold=1.0, label_thresholds={LABELS[j_off]: 0.0}).classify(["hello there"])[0]
    assert one.labels == [LABELS[j_off]]


def test_truncation_is_reported(tiny_encoder: Path, tiny_head: Path) -> None:
    eng = engine(tiny_encoder, tiny_head, max_length=16)
    short, long = eng.classify(["short text", "word " * 40])
    assert not short.truncated and long.truncated
    assert long.tokens == 16


def test_cache_returns_same_result(tiny_encoder: Path, tiny_head: Path) -> None:
    eng = Engine(EngineOptions(embedder=str(tiny_encoder), head=str(tiny_head), cache_size=2))
    first = eng.classify(["lol", "thanks", "lol"])
    assert first[0] == first[2]
    timing = Timing()
    again = eng.classify(["lol"], timing)
    assert again[0] == first[0] and timing.cache_hits == 1


def test_width_mismatch_is_a_clear_error(tiny_encoder: Path, tmp_path: Path) -> None:
    write_head(tmp_path / "wide", [(np.zeros((384, 28), np.float32), np.zeros(28, np.float32))],
               dict.fromkeys(LABELS, 0.5))
    with pytest.raises(ModelError, match="384-wide embeddings but the embedder produces 32"):
        engine(tiny_encoder, tmp_path / "wide")


def test_thresholds_must_cover_labels(tiny_encoder: Path, tmp_path: Path) -> None:
    build_random_head(tmp_path / "h", TINY["hidden"])
    values = dict.fromkeys(LABELS[:-1], 0.5)
    (tmp_path / "h" / "thresholds.json").write_text(json.dumps(values))
    with pytest.raises(ModelError, match=r"missing \['neutral'\]"):
        engine(tiny_encoder, tmp_path / "h")


def test_missing_model_messages(tmp_path: Path, tiny_head: Path) -> None:
    with pytest.raises(ModelError, match="no ONNX encoder"):
        engine(tmp_path, tiny_head)
    with pytest.raises(ModelError, match="not a local directory"):
        engine(Path("nobody/no-such-model"), tiny_head)


def test_cuda_provider_unavailable_is_clear(tiny_encoder: Path, tiny_head: Path) -> None:
    from worker.engine.session import RuntimeOptions

    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.raises(ModelError, match="CUDAExecutionProvider requested but not available"):
        Engine(EngineOptions(embedder=str(tiny_encoder), head=str(tiny_head),
                             runtime=RuntimeOptions(providers=("CUDAExecutionProvider",))))


def test_fold_failure_falls_back_to_two_sessions(tiny_encoder: Path, tiny_head: Path,
                                                 monkeypatch: pytest.MonkeyPatch,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    import worker.engine.engine as engine_module

    def cannot_fold(*_args: object) -> bytes:
        raise ValueError("an operator the fold does not know")

    folded = engine(tiny_encoder, tiny_head).probabilities(TEXTS)[0]
    monkeypatch.setattr(engine_module, "fold_head", cannot_fold)
    eng = engine(tiny_encoder, tiny_head)
    assert eng.folded is None
    assert "could not fold the head into the encoder" in caplog.text
    np.testing.assert_allclose(eng.probabilities(TEXTS)[0], folded, atol=1e-5)


def test_oldest_text_is_scored_first(tiny_encoder: Path, tiny_head: Path) -> None:
    """Calls are cut by length but run by age: the earliest text's call comes first even when that
    text is the longest."""
    eng = Engine(EngineOptions(embedder=str(tiny_encoder), head=str(tiny_head), cache_size=0,
                               call_batch_size=2, concurrent_calls=1))
    texts = ["a much longer first message " * 6, "ok", "no", "fine then", "sure thing", "yes"]
    chunks = list(eng.classify_stream(texts))
    assert len(chunks) >= 3
    firsts = [min(i for i, _ in chunk) for chunk in chunks]
    assert firsts[0] == 0 and firsts == sorted(firsts)


def test_classify_stream_yields_every_position_once(tiny_encoder: Path, tiny_head: Path) -> None:
    eng = Engine(EngineOptions(embedder=str(tiny_encoder), head=str(tiny_head), cache_size=16,
                               call_batch_size=2))
    eng.classify(["lol"])
    texts = ["lol", "word " * 30, "thanks", "lol", "a b c", "thanks", "something longer than the rest " * 4]
    chunks = list(eng.classify_stream(texts))
    assert [i for i, _ in chunks[0]] == [0, 3]  # the cache hits come first
    assert len(chunks) >= 3  # then one chunk per model call
    positions = sorted(i for chunk in chunks for i, _ in chunk)
    assert positions == list(range(len(texts)))
    by_pos = {i: r for chunk in chunks for i, r in chunk}
    assert by_pos[2] == by_pos[5]
    assert [by_pos[i] for i in range(len(texts))] == eng.classify(texts)
