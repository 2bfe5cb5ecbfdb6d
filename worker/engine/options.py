"""The engine's options and their defaults, written once.

Plain frozen dataclasses with no onnxruntime or numpy import, so `worker.config` takes its model
defaults from here (ModelSettings' defaults are these) and loading settings stays light.
`worker.model_choice.engine_options` is the one place that turns settings into these.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The fixed cost of one model call, in padded tokens: measured on 2 cores with a bge-small-shaped
# model, a call costs about 4 ms (int8) to 8 ms (fp32) beyond its tokens, some 20-26 tokens' worth.
CALL_OVERHEAD_TOKENS = 24


@dataclass(frozen=True)
class RuntimeOptions:
    """How onnxruntime runs the models."""

    intra_op_threads: int = 2
    graph_optimization: str = "all"
    providers: tuple[str, ...] = ("CPUExecutionProvider",)
    extra_session_config: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class EngineOptions:
    embedder: str
    head: str
    max_length: int = 512  # tokens; longer texts are truncated and flagged
    pooling: str = "auto"
    threshold: float | None = None
    label_thresholds: dict[str, float] = field(default_factory=dict)
    # Texts per model call, after length sorting (not the stream's micro-batch: batching.max_batch_size).
    call_batch_size: int = 16
    token_budget: int = 4096  # padded tokens per model call
    call_overhead_tokens: int = CALL_OVERHEAD_TOKENS
    cache_size: int = 4096
    fold_head: bool = True  # one session for encoder, pooling and head
    thresholds_file: str | None = None  # replaces the head's thresholds.json
    threads: int = 2  # compute threads in all
    concurrent_calls: int = 2  # model calls run side by side, threads // concurrent_calls cores each
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


# The defaults as values, for settings that mirror these options.
ENGINE_DEFAULTS = EngineOptions(embedder="auto", head="auto")
