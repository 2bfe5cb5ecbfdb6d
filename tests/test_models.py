"""Heads trained on GoEmotions: train-head's output loads like the reference; the frozen-MiniLM
baseline head keeps its quality on dev (the fine-tuned default: tests/test_fine_tune.py)."""

from __future__ import annotations

import json
from pathlib import Path

import onnxruntime as ort
import pytest

from worker.engine.engine import Engine, EngineOptions
from worker.evaluate import evaluate_split
from worker.labels import LABELS
from worker.model_choice import FROZEN_HEAD_DIR
from worker.train.dataset import read_split
from worker.train.train_head import HeadConfig, train_and_write

from .conftest import require_data, require_minilm


def test_dataset_row_counts() -> None:
    data = require_data()
    assert len(read_split(data / "train.tsv").texts) == 43_410
    dev = read_split(data / "dev.tsv")
    assert len(dev.texts) == 5_426 and dev.targets.shape == (5_426, 28)


def test_train_head_writes_reference_format_deterministically(tiny_encoder: Path, tmp_path: Path) -> None:
    data = require_data()
    cfg = [HeadConfig("linear", c=1.0, max_iter=50)]
    train_and_write(cfg, tiny_encoder, data, tmp_path / "a", tmp_path / "cache")
    train_and_write(cfg, tiny_encoder, data, tmp_path / "b", tmp_path / "cache")
    assert (tmp_path / "a" / "model.onnx").read_bytes() == (tmp_path / "b" / "model.onnx").read_bytes()
    thresholds = json.loads((tmp_path / "a" / "thresholds.json").read_text())
    assert list(thresholds) == list(LABELS)
    sess = ort.InferenceSession(str(tmp_path / "a" / "model.onnx"))
    assert [i.name for i in sess.get_inputs()] == ["logits"]
    assert sorted(o.name for o in sess.get_outputs()) == sorted(LABELS)
    engine = Engine(EngineOptions(embedder=str(tiny_encoder), head=str(tmp_path / "a")))
    assert len(engine.classify(["thank you so much"])[0].scores) == 28


@pytest.mark.timeout(900)
def test_frozen_baseline_keeps_its_quality_on_dev() -> None:
    data = require_data()
    minilm = require_minilm()
    engine = Engine(EngineOptions(embedder=str(minilm), head=str(FROZEN_HEAD_DIR), call_batch_size=32))
    tables = evaluate_split(engine, data / "dev.tsv")
    macro = tables["thresholds"]["per_label"]["macro"]["f1"]
    assert macro >= 0.40, macro
    assert tables["thresholds"]["0.5"]["macro"]["f1"] < macro
    assert len(tables["labels"]) == 28
