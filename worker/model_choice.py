"""Which embedder and head to load: what the config names, or for "auto" the default model, the
fine-tuned all-MiniLM-L6-v2 (its embedder rebuilt by `emotion-worker export --default`, found where
worker/default_model.py says, its head shipped in this package); `model.precision: int8` picks its
int8 embedder and the thresholds tuned for it (head-int8/: the same head, its own thresholds.json).
Named models (the reference, any directory) are used as given, whatever the precision. Always says
which is in use; a head is refused with an embedder it was not trained on."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from worker.config import ModelSettings
from worker.default_model import BUILD_COMMAND, default_embedder_dir, int8_variant_dir
from worker.engine.options import EngineOptions, RuntimeOptions
from worker.errors import ModelError
from worker.model_pairing import check_pairing

log = logging.getLogger(__name__)

# The reference model, on the Hugging Face hub: name both to use it.
REFERENCE_EMBEDDER = "BAAI/bge-small-en"
REFERENCE_HEAD = "SamLowe/bge-small-en-go_emotions-classifier-onnx"
SHIPPED = Path(__file__).parent / "models"
# The default model: all-MiniLM-L6-v2 fine-tuned on GoEmotions (LoRA adapters + a linear head).
DEFAULT_MODEL_DIR = SHIPPED / "emotion-minilm"
DEFAULT_HEAD_DIR = DEFAULT_MODEL_DIR / "head"
# The same head (model.onnx is a copy) with thresholds tuned on dev for the int8 embedder.
DEFAULT_HEAD_INT8_DIR = DEFAULT_MODEL_DIR / "head-int8"
DEFAULT_ADAPTER_DIR = DEFAULT_MODEL_DIR / "adapter"
# The earlier default, kept as a baseline: frozen all-MiniLM-L6-v2 + an MLP head (export --base).
FROZEN_HEAD_DIR = SHIPPED / "frozen-minilm-head"


@dataclass(frozen=True)
class ModelChoice:
    embedder: str
    head: str
    description: str


def choose_models(settings: ModelSettings) -> ModelChoice:
    """The pair to load; refuses a head with an embedder it was not trained on (model_pairing)."""
    embedder, head = settings.embedder, settings.head
    int8 = embedder == "auto" and settings.precision == "int8"
    if embedder == "auto":
        fp32_dir = default_embedder_dir(settings.default_embedder)
        default = int8_variant_dir(fp32_dir) if int8 else fp32_dir
        if not (default / "model.onnx").is_file():
            command = BUILD_COMMAND if settings.default_embedder is None else f"{BUILD_COMMAND} --output {fp32_dir}"
            what = "the default embedder's int8 variant" if int8 else "the default embedder"
            raise ModelError(
                f"{what} is not built yet (no "
                f"{default / 'model.onnx'}). Run once: {command}{' --int8' if int8 else ''}   (it needs the 'build' "
                f"extra: README, Running the worker), or set {'model.precision: fp32, or ' if int8 else ''}"
                f"model.embedder and model.head to models you have, e.g. the reference {REFERENCE_EMBEDDER} + "
                f"{REFERENCE_HEAD}"
            )
        embedder = str(default)
    if head == "auto":
        head = str(DEFAULT_HEAD_INT8_DIR if int8 else DEFAULT_HEAD_DIR)
    check_pairing(embedder, head, allow_mismatch=settings.allow_mismatch)
    description = (f"default: all-MiniLM-L6-v2 fine-tuned on GoEmotions, {'int8' if int8 else 'fp32'} "
                   f"({embedder} + {head})" if settings.embedder == "auto" else f"{embedder} + {head}")
    return ModelChoice(embedder, head, description)


def engine_options(settings: ModelSettings) -> tuple[EngineOptions, str]:
    """The one place the model settings become the engine's options (same names; the defaults are
    the engine's, worker/engine/options.py), with a line saying which model is in use."""
    choice = choose_models(settings)
    options = EngineOptions(
        embedder=choice.embedder,
        head=choice.head,
        max_length=settings.max_length,
        pooling=settings.pooling,
        threshold=settings.threshold,
        thresholds_file=settings.thresholds_file,
        label_thresholds=dict(settings.label_thresholds),
        call_batch_size=settings.call_batch_size,
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
