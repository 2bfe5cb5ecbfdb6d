"""model.precision: fp32 or int8 picks the default model's embedder and its own thresholds, through the
real CLI in-process. The default model is stood in for by a small random encoder of its width (384,
what the shipped head takes) and its int8 export, laid out as `export --default --int8` lays them out;
the head and both thresholds files are the shipped ones (the head was trained on another embedder:
model.allow_mismatch lets the stand-in load)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testkit.cli import run_cli
from testkit.models import build_random_encoder, quantized_int8
from worker.config import ModelSettings
from worker.default_model import int8_variant_dir
from worker.engine.thresholds import Thresholds
from worker.labels import LABELS
from worker.model_choice import DEFAULT_HEAD_DIR, DEFAULT_HEAD_INT8_DIR, choose_models

WIDTH_384 = {"hidden": 384, "layers": 1, "heads": 2, "ffn": 64}


@pytest.fixture(scope="module")
def default_fp32(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """<tmp>/emotion-minilm-onnx and, beside it, emotion-minilm-int8-onnx."""
    fp32 = build_random_encoder(tmp_path_factory.mktemp("default") / "emotion-minilm-onnx", **WIDTH_384)
    quantized_int8(fp32, int8_variant_dir(fp32))
    return fp32


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("split") / "few.tsv"
    path.write_text("thank you so much\t15\ta\nthis is awful\t2\tb\nok then\t27\tc\n")
    return path


def evaluated(split: Path, out: Path, **env: str) -> dict[str, str]:
    """`emotion-worker evaluate SPLIT --json OUT` with `env`: the model it reports."""
    result = run_cli("evaluate", str(split), "--json", str(out), env=env)
    assert result.returncode == 0, result.stderr
    model: dict[str, str] = json.loads(out.read_text())["model"]
    return model


def test_precision_selects_embedder_and_thresholds(default_fp32: Path, split: Path, tmp_path: Path) -> None:
    where = {"EMOTION_WORKER_MODEL__DEFAULT_EMBEDDER": str(default_fp32), "EMOTION_WORKER_MODEL__ALLOW_MISMATCH": "1"}
    unset = evaluated(split, tmp_path / "unset.json", **where)
    fp32 = evaluated(split, tmp_path / "fp32.json", **where, EMOTION_WORKER_MODEL__PRECISION="fp32")
    int8 = evaluated(split, tmp_path / "int8.json", **where, EMOTION_WORKER_MODEL__PRECISION="INT8")  # any case

    assert unset == fp32  # fp32 is the default
    assert fp32["embedder"] == str(default_fp32)
    assert fp32["head"] == str(DEFAULT_HEAD_DIR)
    assert fp32["thresholds_hash"] == Thresholds.load(DEFAULT_HEAD_DIR / "thresholds.json").digest()
    assert int8["embedder"] == str(default_fp32.with_name("emotion-minilm-int8-onnx"))
    assert int8["head"] == str(DEFAULT_HEAD_INT8_DIR)
    assert int8["thresholds_hash"] == Thresholds.load(DEFAULT_HEAD_INT8_DIR / "thresholds.json").digest()
    assert int8["thresholds_hash"] != fp32["thresholds_hash"]

    # classify, and the settings file, take it too
    config = tmp_path / "worker.yaml"
    config.write_text(f"model:\n  precision: int8\n  default_embedder: {default_fp32}\n  allow_mismatch: true\n")
    result = run_cli("classify", "hi", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert set(json.loads(result.stdout)["scores"]) == set(LABELS)


def test_explicit_embedder_is_used_as_given(default_fp32: Path) -> None:
    settings = ModelSettings(embedder=str(default_fp32), precision="int8", allow_mismatch=True)
    choice = choose_models(settings)
    assert (choice.embedder, choice.head) == (str(default_fp32), str(DEFAULT_HEAD_DIR))


@pytest.mark.parametrize("value", ["int4", "fp16", ""])
def test_bad_precision_is_one_line(value: str) -> None:
    result = run_cli("classify", "hi", env={"EMOTION_WORKER_MODEL__PRECISION": value})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: config: EMOTION_WORKER_MODEL__PRECISION")
    assert "'fp32' or 'int8'" in lines[0]


def test_int8_not_built_says_how(tmp_path: Path, default_fp32: Path) -> None:
    only_fp32 = tmp_path / "mine-onnx"
    only_fp32.symlink_to(default_fp32, target_is_directory=True)  # no mine-int8-onnx beside it
    env = {"EMOTION_WORKER_MODEL__DEFAULT_EMBEDDER": str(only_fp32), "EMOTION_WORKER_MODEL__PRECISION": "int8"}
    result = run_cli("classify", "hi", env=env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    missing = tmp_path / "mine-int8-onnx" / "model.onnx"
    assert lines[0].startswith(f"error: the default embedder's int8 variant is not built yet (no {missing})")
    assert f"export --default --output {only_fp32} --int8" in lines[0]
    assert "model.precision: fp32" in lines[0]


def test_int8_variant_dir_is_where_export_writes() -> None:
    assert int8_variant_dir(Path("/m/emotion-minilm-onnx")) == Path("/m/emotion-minilm-int8-onnx")
    assert int8_variant_dir(Path("/models/embedder")) == Path("/models/embedder-int8")


def test_shipped_int8_head() -> None:
    """The int8 head is the default head with its own flat label -> threshold file and the same
    pairing record."""
    assert (DEFAULT_HEAD_INT8_DIR / "model.onnx").read_bytes() == (DEFAULT_HEAD_DIR / "model.onnx").read_bytes()
    thresholds = json.loads((DEFAULT_HEAD_INT8_DIR / "thresholds.json").read_text())
    assert list(thresholds) == list(LABELS)
    assert all(isinstance(v, float) and 0.0 < v < 1.0 for v in thresholds.values())
    assert thresholds != json.loads((DEFAULT_HEAD_DIR / "thresholds.json").read_text())
    record = json.loads((DEFAULT_HEAD_INT8_DIR / "training.json").read_text())
    fp32_record = json.loads((DEFAULT_HEAD_DIR / "training.json").read_text())
    assert record["precision"] == "int8"
    assert record["embedder_identity"] == fp32_record["embedder_identity"]
