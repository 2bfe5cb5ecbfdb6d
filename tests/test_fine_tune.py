"""fine-tune end to end on a tiny random encoder (format, determinism, the head contract,
thresholds, rebuild), and the shipped fine-tuned model: rebuilt from the base weights and its
adapters, it reproduces the trained model and its recorded dev quality (evaluation only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from testkit.models import build_random_bert
from worker.engine.engine import Engine, EngineOptions
from worker.labels import LABELS
from worker.model_choice import DEFAULT_HEAD_DIR, DEFAULT_MODEL_DIR
from worker.train.dataset import read_split
from worker.train.fine_tune import REFERENCE_TEXTS, Recipe, build_embedder, fine_tune
from worker.train.metrics import report, tune_thresholds

from .conftest import ROOT, TINY, require_data

DEFAULT_EMBEDDER = ROOT / "models" / "emotion-minilm-onnx"


@pytest.fixture(scope="module")
def small_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first 240 train and 120 dev rows of GoEmotions."""
    data = require_data()
    out = tmp_path_factory.mktemp("go-small")
    for name, rows in (("train", 240), ("dev", 120)):
        lines = (data / f"{name}.tsv").read_text(encoding="utf-8").splitlines(keepends=True)[:rows]
        (out / f"{name}.tsv").write_text("".join(lines), encoding="utf-8")
    return out


@pytest.fixture(scope="module")
def tiny_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = build_random_bert(tmp_path_factory.mktemp("tiny-base") / "bert", **TINY)
    (base / "1_Pooling").mkdir()
    (base / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    return base


def test_fine_tune_writes_the_contract_deterministically(small_data: Path, tiny_base: Path, tmp_path: Path) -> None:
    recipe = Recipe(epochs=2, lora_rank=4, lora_alpha=8, seed=3)
    a = fine_tune(str(tiny_base), small_data, tmp_path / "a", recipe, check_rows=False, progress=False)
    b = fine_tune(str(tiny_base), small_data, tmp_path / "b", recipe, check_rows=False, progress=False)
    for part in ("adapter/adapter.safetensors", "head/model.onnx", "head/thresholds.json", "reference_probs.npy"):
        assert (tmp_path / "a" / part).read_bytes() == (tmp_path / "b" / part).read_bytes(), part
    assert [e["dev_macro_f1"] for e in a["epochs"]] == [e["dev_macro_f1"] for e in b["epochs"]]

    # training.json: recipe, seed, per-epoch dev metrics, time; the best epoch is the one kept.
    info = json.loads((tmp_path / "a" / "training.json").read_text())
    assert info["recipe"]["lora_rank"] == 4 and info["seed"] == 3 and info["seconds"] > 0
    assert len(info["epochs"]) == 2
    scores = [e["dev_macro_f1"] for e in info["epochs"]]
    assert info["best_epoch"] == 1 + int(np.argmax(scores))
    # The exported model (logit scale folded into the head) scores what the torch model scored.
    assert abs(info["dev_macro_f1"] - max(scores)) < 0.02

    # The head contract: input `logits`, 28 outputs named by label, each (N, 2) = [1 - p, p].
    head = tmp_path / "a" / "head"
    sess = ort.InferenceSession(str(head / "model.onnx"))
    assert [i.name for i in sess.get_inputs()] == ["logits"] and sess.get_inputs()[0].shape[1] == TINY["hidden"]
    assert sorted(o.name for o in sess.get_outputs()) == sorted(LABELS)
    outs = sess.run(None, {"logits": np.eye(2, TINY["hidden"], dtype=np.float32)})
    assert all(o.shape == (2, 2) and np.allclose(o.sum(axis=1), 1) for o in outs)

    # Thresholds: tuned on dev with the exported model itself.
    dev = read_split(small_data / "dev.tsv", check_rows=False)
    engine = Engine(EngineOptions(embedder=str(tmp_path / "a" / "embedder"), head=str(head), cache_size=0))
    assert engine.identity.pooling == "mean"
    probs, _, _ = engine.probabilities(dev.texts)
    thresholds = json.loads((head / "thresholds.json").read_text())
    assert thresholds == tune_thresholds(dev.targets, probs)
    vec = np.array([thresholds[label] for label in LABELS], dtype=np.float32)
    assert report(dev.targets, probs >= vec).macro()["f1"] == pytest.approx(info["dev_macro_f1"])

    # A rebuild from the base weights and the adapters reproduces the trained model.
    rebuilt = build_embedder(tmp_path / "a" / "adapter", tmp_path / "rebuilt")
    again = Engine(EngineOptions(embedder=str(rebuilt), head=str(head), cache_size=0)).probabilities(dev.texts)[0]
    reference = np.load(tmp_path / "a" / "reference_probs.npy")
    assert np.abs(again[:len(reference)] - reference).max() < 1e-4

    # The head records the embedder it was trained on (its pairing is checked at start), and a
    # rebuild is that same embedder.
    identity = json.loads((tmp_path / "a" / "embedder" / "embedder.json").read_text())
    assert info["embedder_identity"] == identity
    assert json.loads((head / "training.json").read_text())["embedder_identity"] == identity
    assert json.loads((rebuilt / "embedder.json").read_text()) == identity


@pytest.mark.timeout(900)
def test_shipped_model_rebuilt_reproduces_training_and_its_dev_quality() -> None:
    data = require_data()
    if not (DEFAULT_EMBEDDER / "model.onnx").is_file():
        pytest.skip("default embedder not built: run `emotion-worker export --default` (scripts/setup does)")
    info = json.loads((DEFAULT_HEAD_DIR / "training.json").read_text())
    engine = Engine(EngineOptions(embedder=str(DEFAULT_EMBEDDER), head=str(DEFAULT_HEAD_DIR), cache_size=0))
    dev = read_split(data / "dev.tsv")
    probs, _, _ = engine.probabilities(dev.texts)
    reference = np.load(DEFAULT_MODEL_DIR / "reference_probs.npy")
    assert reference.shape == (REFERENCE_TEXTS, 28)
    assert np.abs(probs[:REFERENCE_TEXTS] - reference).max() < 1e-4
    macro = report(dev.targets, probs >= engine.thresholds.vector).macro()["f1"]
    assert macro == pytest.approx(info["dev_macro_f1"], abs=1e-6)
    assert macro >= 0.54, macro


def test_asymmetric_loss_is_bce_without_its_asymmetry_and_spares_easy_negatives() -> None:
    import torch

    from worker.train.losses import asymmetric_loss, loss_function

    torch.manual_seed(0)
    logits = torch.randn(8, 28) * 3
    targets = (torch.rand(8, 28) < 0.1).float()
    bce = loss_function("bce")(logits, targets)
    plain = asymmetric_loss(logits, targets, gamma_neg=0.0, gamma_pos=0.0, clip=0.0)
    assert torch.allclose(plain, bce, atol=1e-5)
    # A negative with p below the clip costs nothing; a confident wrong negative still costs.
    easy, wrong = torch.tensor([[-4.0]]), torch.tensor([[4.0]])  # p = 0.018, p = 0.982
    assert float(asymmetric_loss(easy, torch.zeros(1, 1))) == 0.0
    assert float(asymmetric_loss(wrong, torch.zeros(1, 1))) > 1.0
    # Positives are BCE's with gamma_pos 0.
    assert torch.allclose(asymmetric_loss(easy, torch.ones(1, 1)), loss_function("bce")(easy, torch.ones(1, 1)))


def test_checkpoint_averaging_is_kept_only_where_dev_says_better(small_data: Path, tiny_base: Path,
                                                                 tmp_path: Path) -> None:
    recipe = Recipe(epochs=3, lora_rank=4, lora_alpha=8, seed=5, average_last=2, loss="asl")
    info = fine_tune(str(tiny_base), small_data, tmp_path / "avg", recipe, check_rows=False, progress=False)
    scores = [e["dev_macro_f1"] for e in info["epochs"]]
    assert info["average_dev_macro_f1"] is not None and info["recipe"]["loss"] == "asl"
    if info["average_dev_macro_f1"] > max(scores):
        assert info["selected"] == "mean of epochs 2-3"
        kept = info["average_dev_macro_f1"]
    else:
        assert info["selected"] == f"epoch {info['best_epoch']}"
        kept = max(scores)
    assert abs(info["dev_macro_f1"] - kept) < 0.02  # the exported model scores what was kept


def test_average_states_is_the_elementwise_mean() -> None:
    import torch

    from worker.train.fine_tune import average_states

    a = {"adapter": {"x": torch.tensor([1.0, 3.0])}, "head": {"w": torch.tensor([[2.0]])}, "scale": torch.tensor(10.0)}
    b = {"adapter": {"x": torch.tensor([3.0, 5.0])}, "head": {"w": torch.tensor([[4.0]])}, "scale": torch.tensor(20.0)}
    mean = average_states([a, b])
    assert mean["adapter"]["x"].tolist() == [2.0, 4.0] and mean["head"]["w"].tolist() == [[3.0]]
    assert float(mean["scale"]) == 15.0
