"""Which embedder and head to load: what the config names, or for "auto" the reference model when
it is at hand and the offline default otherwise. Always says which one is in use."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from worker.config import ModelSettings
from worker.engine.engine import EngineOptions
from worker.engine.resolve import resolve_model_dir
from worker.engine.session import RuntimeOptions
from worker.errors import ModelError

log = logging.getLogger(__name__)

REFERENCE_EMBEDDER = "BAAI/bge-small-en"
REFERENCE_HEAD = "SamLowe/bge-small-en-go_emotions-classifier-onnx"
DEFAULT_HEAD_DIR = Path(__file__).parent / "default_head"


@dataclass(frozen=True)
class ModelChoice:
    embedder: str
    head: str
    description: str


def choose_models(settings: ModelSettings) -> ModelChoice:
    if settings.embedder != "auto" and settings.head != "auto":
        return ModelChoice(settings.embedder, settings.head, f"{settings.embedder} + {settings.head}")
    if settings.embedder == "auto" and settings.head == "auto":
        try:
            resolve_model_dir(REFERENCE_HEAD, what="head")
            resolve_model_dir(REFERENCE_EMBEDDER, what="embedder")
            return ModelChoice(REFERENCE_EMBEDDER, REFERENCE_HEAD, "reference: bge-small-en + SamLowe head")
        except ModelError as exc:
            log.info("reference model not available (%s); using the offline default", exc)
    offline = Path(settings.offline_embedder)
    embedder = settings.embedder if settings.embedder != "auto" else str(offline)
    head = settings.head if settings.head != "auto" else str(DEFAULT_HEAD_DIR)
    if settings.embedder == "auto" and not offline.is_dir():
        raise ModelError(
            f"the reference model is not reachable and the offline default embedder {offline} is not "
            "exported yet. Run: emotion-worker export --default   (needs the 'export' extra), or set "
            "model.embedder / model.head to models you have."
        )
    description = (
        f"offline default: all-MiniLM-L6-v2 ({embedder}) + GoEmotions head ({head})"
        if settings.embedder == "auto"
        else f"{embedder} + {head}"
    )
    return ModelChoice(embedder, head, description)


def engine_options(settings: ModelSettings) -> tuple[EngineOptions, str]:
    choice = choose_models(settings)
    options = EngineOptions(
        embedder=choice.embedder,
        head=choice.head,
        max_length=settings.max_length,
        pooling=settings.pooling,
        threshold=settings.threshold,
        thresholds_file=settings.thresholds_file,
        label_thresholds=dict(settings.label_thresholds),
        max_batch_size=settings.batch_size,
        token_budget=settings.token_budget,
        call_overhead_tokens=settings.call_overhead_tokens,
        fold_head=settings.fold_head,
        cache_size=settings.cache_size,
        threads=settings.threads,
        concurrent_calls=settings.concurrent_calls,
        runtime=RuntimeOptions(
            graph_optimization=settings.graph_optimization,
            providers=tuple(settings.providers),
            extra_session_config=dict(settings.session_config),
        ),
    )
    return options, choice.description
