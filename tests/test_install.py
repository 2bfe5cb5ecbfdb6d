"""The default model runs from anywhere: its embedder lives where `export --default` builds it, not
in the current directory; and the documented install sequence works in a fresh virtualenv outside
the checkout (README, "Running the worker")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from testkit.cli import run_cli
from worker.default_model import DEFAULT_EMBEDDER_NAME, default_embedder_dir, models_dir, user_models_dir

ROOT = Path(__file__).resolve().parent.parent
BUILT_DEFAULT = ROOT / "models" / DEFAULT_EMBEDDER_NAME
SOURCE_FILES = ("pyproject.toml", "README.md", "constraints.txt", "worker")


def test_the_default_location_does_not_depend_on_the_current_directory(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    here = default_embedder_dir()
    monkeypatch.chdir(tmp_path)
    assert default_embedder_dir() == here
    assert here.is_absolute()
    assert models_dir() == ROOT / "models"  # this checkout (an editable install): where scripts/setup builds
    assert default_embedder_dir(str(tmp_path / "mine")) == tmp_path / "mine"


def test_the_user_cache_location(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert user_models_dir() == tmp_path / "emotion-worker" / "models"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/ignored")  # the XDG spec: relative paths are invalid
    assert user_models_dir() == Path.home() / ".cache" / "emotion-worker" / "models"


def test_not_built_says_the_exact_command(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    result = run_cli("classify", "hi", env={"EMOTION_WORKER_MODEL__DEFAULT_EMBEDDER": str(missing)}, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert f"Run once: emotion-worker export --default --output {missing} " in result.stderr


def test_auto_from_another_directory(tmp_path: Path) -> None:
    if not (BUILT_DEFAULT / "model.onnx").is_file():
        pytest.skip("the default embedder is not built in this checkout: run scripts/setup")
    result = run_cli("classify", "thank you so much, this is great!", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "gratitude" in json.loads(result.stdout)["labels"]


def pypi_unreachable() -> str | None:
    index = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple/").rstrip("/") + "/pip/"
    try:
        with urllib.request.urlopen(index, timeout=10):
            return None
    except OSError as exc:
        return f"no network to the package index {index} ({exc}): the install test needs it"


@pytest.mark.timeout(1200)
def test_install_build_and_classify_from_anywhere(tmp_path: Path) -> None:
    """README's sequence in a fresh virtualenv outside the checkout: a CPU torch, the package with its
    'build' extra, `emotion-worker export --default`, then classify from another directory."""
    reason = pypi_unreachable()
    if reason:
        pytest.skip(reason)
    source = tmp_path / "emotion-stream-worker"  # a copy: building in the shared checkout would write into it
    source.mkdir()
    for name in SOURCE_FILES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copyfile(ROOT / name, source / name)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("EMOTION_WORKER_", "VIRTUAL_ENV", "PYTHON"))}
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, env=env)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]

    def run(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(args, capture_output=True, text=True, timeout=900, env=env, cwd=cwd)
        assert done.returncode == 0, f"{' '.join(args)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
        return done

    # A CPU torch first. Here pip's configuration has a local CPU wheel; elsewhere TORCH_INDEX_URL (as the
    # Dockerfile's build argument) names PyTorch's CPU index, e.g. https://download.pytorch.org/whl/cpu.
    torch_index = os.environ.get("TORCH_INDEX_URL")
    run([*pip, "torch==2.13.0", *(["--index-url", torch_index] if torch_index else [])], env=env, cwd=tmp_path)
    run([*pip, "-c", str(source / "constraints.txt"), f"{source}[build]"], env=env, cwd=tmp_path)
    shutil.rmtree(source)  # the install must not need its source
    worker_env = {**env, "XDG_CACHE_HOME": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    exe = str(venv / "bin" / "emotion-worker")
    built = run([exe, "export", "--default"], env=worker_env, cwd=elsewhere)
    expected = tmp_path / "cache" / "emotion-worker" / "models" / DEFAULT_EMBEDDER_NAME
    assert f"wrote {expected / 'model.onnx'}" in built.stdout
    assert (expected / "embedder.json").is_file()
    assert not any(elsewhere.iterdir())  # nothing written where it ran
    other = tmp_path / "other"
    other.mkdir()
    done = run([exe, "classify", "thank you so much, this is great!"], env=worker_env, cwd=other)
    assert "gratitude" in json.loads(done.stdout)["labels"]
