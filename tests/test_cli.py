"""The command line as a user runs it (in-process: testkit.cli), real models, no tracebacks."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import orjson
import pytest

from testkit.cli import CliResult, run_cli
from testkit.models import quantized_int8

ROOT = Path(__file__).resolve().parent.parent


def cli(*args: str, stdin: str | None = None) -> CliResult:
    """`emotion-worker ARGS` from the repository root; an exception escaping a command fails the test."""
    return run_cli(*args, stdin=stdin, cwd=ROOT)


@pytest.mark.parametrize("offline", [False, True], ids=["online", "HF_HUB_OFFLINE"])
def test_bad_model_is_one_clear_message(tmp_path: Path, tiny_head: Path, offline: bool,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", offline)  # what HF_HUB_OFFLINE=1 sets at import
    res = cli("classify", "hi", "--embedder", str(tmp_path), "--head", str(tiny_head))
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert res.stderr.startswith("error: embedder directory") and "no ONNX encoder" in res.stderr
    res = cli("classify", "hi", "--embedder", "no-such-owner/no-such-model", "--head", str(tiny_head))
    assert res.returncode == 2 and "Traceback" not in res.stderr and "hub" in res.stderr
    assert len(res.stderr.splitlines()) == 1 and ("hub is offline" in res.stderr) == offline, res.stderr


def test_bad_config_is_one_line_per_problem(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("batching:\n  max_wait_ms: -1\nobserve:\n  port: 99999\n")
    res = cli("run", "--config", str(cfg))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len([line for line in res.stderr.splitlines() if line.strip()]) == 2


def test_evaluate_against_another_embedder(tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    from worker.engine.engine import Engine, EngineOptions
    from worker.labels import LABELS

    texts = [line for line in (ROOT / "worker" / "data" / "sample_chat.txt").read_text().splitlines() if line]
    split = tmp_path / "mini.tsv"
    split.write_text("".join(f"{t}\t{i % 28}\tid{i}\n" for i, t in enumerate(texts)))
    int8 = tmp_path / "tiny-int8"
    quantized_int8(tiny_encoder, int8)
    # Thresholds at each label's median probability, so int8's small errors flip some labels.
    head = tmp_path / "head"
    shutil.copytree(tiny_head, head)
    probs, _, _ = Engine(EngineOptions(str(tiny_encoder), str(tiny_head))).probabilities(texts)
    medians = np.median(probs, axis=0).tolist()
    (head / "thresholds.json").write_text(orjson.dumps(dict(zip(LABELS, medians, strict=True))).decode())
    model = ("--embedder", str(tiny_encoder), "--head", str(head))

    res = cli("evaluate", str(split), *model, "--against", str(tiny_encoder), "--json", str(tmp_path / "same.json"))
    assert res.returncode == 0, res.stderr
    same = orjson.loads((tmp_path / "same.json").read_bytes())["against"]
    assert same["label_sets_identical"] == 1.0 and same["max_abs_dp"] == 0.0 and same["flips"] == {}

    res = cli("evaluate", str(split), *model, "--against", str(int8), "--json", str(tmp_path / "int8.json"))
    assert res.returncode == 0, res.stderr
    assert "label sets identical on" in res.stdout
    got = orjson.loads((tmp_path / "int8.json").read_bytes())["against"]
    assert got["embedder"] == str(int8) and got["mean_abs_dp"] > 0
    # the same comparison, made independently through the classify path
    fp32_sets = [set(r.labels) for r in Engine(EngineOptions(str(tiny_encoder), str(head))).classify(texts)]
    int8_sets = [set(r.labels) for r in Engine(EngineOptions(str(int8), str(head))).classify(texts)]
    identical = sum(a == b for a, b in zip(fp32_sets, int8_sets, strict=True)) / len(texts)
    assert 0 < identical < 1 and got["label_sets_identical"] == identical
    assert sum(got["flips"].values()) == sum(len(a ^ b) for a, b in zip(fp32_sets, int8_sets, strict=True))


def test_tune_thresholds_writes_a_file_the_worker_loads(tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    from worker.engine.engine import Engine, EngineOptions
    from worker.engine.thresholds import Thresholds
    from worker.labels import LABELS
    from worker.train.metrics import THRESHOLD_GRID

    texts = [line for line in (ROOT / "worker" / "data" / "sample_chat.txt").read_text().splitlines() if line]
    split = tmp_path / "mini.tsv"
    split.write_text("".join(f"{t}\t{i % 28},{(i * 7) % 28}\tid{i}\n" for i, t in enumerate(texts)))
    model = ("--embedder", str(tiny_encoder), "--head", str(tiny_head))
    written: dict[float, dict[str, float]] = {}
    for shrink in (0.0, 0.5, 1.0):
        out = tmp_path / f"thresholds-{shrink}.json"
        res = cli("tune-thresholds", str(split), *model, "--shrink", str(shrink), "--output", str(out))
        assert res.returncode == 0, res.stderr
        assert "macro F1 on mini.tsv" in res.stderr and "other half" in res.stderr
        written[shrink] = orjson.loads(out.read_bytes())
        assert list(written[shrink]) == list(LABELS)
        assert Thresholds.load(out).values == written[shrink]  # validated as SIGHUP reloads it
    own, half, common = written[0.0], written[0.5], written[1.0]
    assert all(th in np.round(THRESHOLD_GRID, 2) for th in own.values())
    assert len(set(common.values())) == 1  # shrunk all the way: one global threshold
    assert all(abs(half[k] - (own[k] + common[k]) / 2) < 1e-9 for k in LABELS)
    # Printed (no --output) and applied: the tuned set is what the engine then decides with.
    res = cli("tune-thresholds", str(split), *model, "--shrink", "0.5")
    assert res.returncode == 0 and orjson.loads(res.stdout) == half
    head = tmp_path / "head"
    shutil.copytree(tiny_head, head)
    shutil.copyfile(tmp_path / "thresholds-0.5.json", head / "thresholds.json")
    engine = Engine(EngineOptions(str(tiny_encoder), str(head)))
    assert engine.thresholds.vector.tolist() == [np.float32(half[k]) for k in LABELS]
    assert cli("tune-thresholds", str(split), *model, "--shrink", "1.5").returncode == 2
