"""onnxruntime session construction from the engine's runtime options."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from worker.engine.options import RuntimeOptions as RuntimeOptions  # re-exported: callers import it from here
from worker.errors import ModelError

GRAPH_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


def check_providers(providers: tuple[str, ...]) -> list[str]:
    available = ort.get_available_providers()
    missing = [p for p in providers if p not in available]
    if missing:
        raise ModelError(
            f"execution provider(s) {', '.join(missing)} requested but not available in this "
            f"onnxruntime build (available: {', '.join(available)}). For CUDA install "
            "onnxruntime-gpu with a matching CUDA runtime, or set model.providers to "
            "[CPUExecutionProvider]."
        )
    return list(providers)


def open_session(path: Path, options: RuntimeOptions, *, threads: int | None = None) -> ort.InferenceSession:
    try:
        return ort.InferenceSession(str(path), sess_options=session_options(options, threads),
                                    providers=check_providers(options.providers))
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(f"cannot load ONNX model {path}: {exc}") from exc


def session_options(options: RuntimeOptions, threads: int | None) -> ort.SessionOptions:
    if options.graph_optimization not in GRAPH_LEVELS:
        raise ModelError(
            f"graph_optimization {options.graph_optimization!r} must be one of {sorted(GRAPH_LEVELS)}"
        )
    so = ort.SessionOptions()
    so.intra_op_num_threads = options.intra_op_threads if threads is None else threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = GRAPH_LEVELS[options.graph_optimization]
    so.log_severity_level = 3
    for key, value in options.extra_session_config.items():
        so.add_session_config_entry(key, value)
    return so
