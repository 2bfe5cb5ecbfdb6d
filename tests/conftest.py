"""Shared fixtures: real ONNX models built by the project's own export code, a real local broker."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from testkit.faults import write_fault_report
from testkit.models import build_random_encoder, build_random_head
from worker.devtools.broker import LocalBroker

ROOT = Path(__file__).resolve().parent.parent
DATA_DIR = ROOT.parent / "shared" / "data" / "go_emotions"
MINILM_DIR = ROOT / "models" / "all-MiniLM-L6-v2-onnx"
TINY = {"hidden": 32, "layers": 2, "heads": 2, "ffn": 64}


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def tiny_encoder(models_dir: Path) -> Path:
    """A random 2-layer BERT (hidden 32) with the real WordPiece tokenizer; CLS pooling."""
    return build_random_encoder(models_dir / "tiny-bert", **TINY)


@pytest.fixture(scope="session")
def tiny_encoder_mean(tiny_encoder: Path, models_dir: Path) -> Path:
    """The same encoder, declared mean-pooled through a sentence-transformers pooling config."""
    out = models_dir / "tiny-bert-mean"
    shutil.copytree(tiny_encoder, out)
    (out / "1_Pooling").mkdir(exist_ok=True)
    (out / "1_Pooling" / "config.json").write_text(
        '{"pooling_mode_cls_token": false, "pooling_mode_mean_tokens": true}')
    return out


@pytest.fixture(scope="session")
def tiny_head(models_dir: Path) -> Path:
    out = models_dir / "tiny-head"
    build_random_head(out, TINY["hidden"], seed=1)
    return out


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalBroker]:
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with LocalBroker(log_path=log) as b:
        yield b


@pytest.fixture(autouse=True)
def _no_leftover_workers() -> Iterator[None]:
    """A failed assertion must not leave worker processes running into later tests."""
    from testkit.kafka import LIVE

    yield
    while LIVE:
        LIVE.pop().kill_if_running()


def require_minilm() -> Path:
    if not (MINILM_DIR / "model.onnx").is_file():
        pytest.skip("offline default embedder not exported: run `emotion-worker export --default`")
    return MINILM_DIR


def require_data() -> Path:
    if not (DATA_DIR / "dev.tsv").is_file():
        pytest.skip(f"GoEmotions data not at {DATA_DIR}")
    return DATA_DIR


@pytest.fixture(scope="session")
def report() -> Iterator[list[dict[str, Any]]]:
    """The fault suites' scenario rows, written once at the end of the session (FAULT_REPORT, or
    .cache/faults/report.json and .md)."""
    rows: list[dict[str, Any]] = []
    yield rows
    if rows:
        write_fault_report(rows, Path(os.environ.get("FAULT_REPORT", ".cache/faults/report.json")))
