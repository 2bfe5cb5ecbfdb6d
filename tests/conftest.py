"""Shared fixtures: real ONNX models built by the project's own export code, a real local broker."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
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


# pytest-xdist (scripts/test runs the suite on several workers). Modules whose module-scoped
# fixtures are costly (a container image, trained or exported models) run whole on one worker; every
# other test is a unit of its own. (xdist's xdist_group marks are ignored under pytest 9.2: xdist
# renames node ids, which pytest 9 no longer reads.) The slowest modules are queued first, so that no
# long test starts last.
WHOLE_MODULES = frozenset({"test_container", "test_fine_tune", "test_precision", "test_model_pairing",
                           "test_classify", "test_check_tail"})
SLOW_FIRST = ("test_install", "test_faults", "test_exactly_once", "test_faults_edges", "test_replay",
              "test_ops_polish", "test_observe", "test_models")


def _module_of(nodeid: str) -> str:
    return Path(nodeid.split("::", 1)[0]).stem


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(_module_of(item.nodeid), len(rank)))  # stable: file order otherwise


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist's
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling

    class WholeCostlyModules(LoadScopeScheduling):  # type: ignore[misc]
        def _split_scope(self, nodeid: str) -> str:
            return nodeid.split("::", 1)[0] if _module_of(nodeid) in WHOLE_MODULES else nodeid

    return WholeCostlyModules(config, log)


def _fault_report_path() -> Path:
    return Path(os.environ.get("FAULT_REPORT", ".cache/faults/report.json"))


def _fault_report_parts() -> Path:
    """Where each pytest-xdist worker leaves its rows for the controller to merge."""
    path = _fault_report_path()
    return path.with_name(path.name + ".parts")


def pytest_sessionstart(session: pytest.Session) -> None:
    if not hasattr(session.config, "workerinput"):  # the controller (or a run without xdist)
        shutil.rmtree(_fault_report_parts(), ignore_errors=True)


def pytest_sessionfinish(session: pytest.Session) -> None:
    parts = _fault_report_parts()
    if hasattr(session.config, "workerinput") or not parts.is_dir():
        return
    rows = [row for part in sorted(parts.glob("*.json")) for row in orjson.loads(part.read_bytes())]
    shutil.rmtree(parts, ignore_errors=True)
    if rows:
        write_fault_report(sorted(rows, key=lambda r: str(r["scenario"])), _fault_report_path())


@pytest.fixture(scope="session")
def report() -> Iterator[list[dict[str, Any]]]:
    """The fault suites' scenario rows, written once at the end of the session (FAULT_REPORT, or
    .cache/faults/report.json and .md); under pytest-xdist each worker's rows are merged by the
    controller at the end."""
    rows: list[dict[str, Any]] = []
    yield rows
    if not rows:
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker is None:
        write_fault_report(rows, _fault_report_path())
    else:
        parts = _fault_report_parts()
        parts.mkdir(parents=True, exist_ok=True)
        (parts / f"{worker}.json").write_bytes(orjson.dumps(rows))
