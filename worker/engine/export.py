"""Turn a hub model or a local PyTorch/safetensors model into the ONNX layout the engine loads.

Needs the optional `build` extra (or `export`: optimum-onnx, which pulls in torch); the runtime does not.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import shutil
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from worker.engine.embedder_identity import EmbedderIdentity, weights_fingerprint, write_identity
from worker.errors import ModelError

KEEP_FILES = ("1_Pooling/config.json", "modules.json", "sentence_bert_config.json", "README.md")
# Libraries whose warnings and log lines (deprecations, torch's TracerWarning, export chatter) an
# export's user need not see; errors still show.
CHATTY_LOGGERS = ("transformers", "optimum", "torch", "peft", "huggingface_hub", "sentence_transformers")


@contextmanager
def quiet_libraries() -> Iterator[None]:
    """Silence the libraries' warnings (the `warnings` module) and their log lines below ERROR for
    the duration; the worker's own output is untouched."""
    loggers = [logging.getLogger(name) for name in CHATTY_LOGGERS]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def export_encoder(source: str, output: Path, *, opset: int | None = None, name: str | None = None,
                   identity: EmbedderIdentity | None = None) -> Path:
    """Export `source` (hub id or directory) as a feature-extraction encoder to `output`.

    Writes model.onnx (output `last_hidden_state`), the tokenizer files, the model's
    sentence-transformers pooling config where it has one, so the engine pools as the model says,
    and embedder.json: `identity`, or `name` (default: the hub id or the directory's name) and the
    fingerprint of the source weights.
    """
    from worker.engine.resolve import resolve_model_dir

    if any(importlib.util.find_spec(name) is None for name in ("optimum", "torch")):  # cheap: before a download
        raise _missing_extra()
    # A hub id is fetched (or found in the cache) once, up front, failing in one line when the hub is
    # out of reach; the exporter then reads the local copy and never calls the hub itself.
    src_dir = resolve_model_dir(source, what="export source")
    try:
        with quiet_libraries():
            from optimum.exporters.onnx import main_export
    except ImportError as exc:
        raise _missing_extra() from exc
    output.mkdir(parents=True, exist_ok=True)
    try:
        with quiet_libraries():
            main_export(
                str(src_dir),
                output=output,
                task="feature-extraction",
                library_name="transformers",
                opset=opset,
                do_validation=False,
            )
    except Exception as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"export of {source!r} failed: {first}") from exc
    for name in KEEP_FILES:
        if (src_dir / name).is_file():
            (output / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src_dir / name, output / name)
    (output / "export.json").write_text(json.dumps({"source": source}, indent=2) + "\n")
    if identity is None:
        identity = EmbedderIdentity(name or (Path(source).resolve().name if Path(source).is_dir() else source),
                                    weights_fingerprint(src_dir))
    write_identity(output, identity)
    return output / "model.onnx"


def _missing_extra() -> ModelError:
    from worker.default_model import BUILD_EXTRA

    return ModelError(f"export needs the 'build' extra (optimum-onnx, torch): install {BUILD_EXTRA}")


def quantize_int8(model_dir: Path, output: Path) -> Path:
    """Dynamic int8: signed, per-channel, reduced-range weights of MatMul/Attention (fast and safe
    on AVX2 machines without VNNI). Copies the tokenizer and pooling files beside it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    src = model_dir / "model.onnx"
    if not src.is_file():
        raise ModelError(f"{model_dir} has no model.onnx to quantize")
    output.mkdir(parents=True, exist_ok=True)
    for item in model_dir.iterdir():
        if item.name == "model.onnx":
            continue
        target = output / item.name
        if item.is_dir():
            shutil.copytree(item, target, dirs_exist_ok=True)
        else:
            shutil.copyfile(item, target)
    quantize_dynamic(
        str(src),
        str(output / "model.onnx"),
        weight_type=QuantType.QInt8,
        per_channel=True,
        reduce_range=True,
        op_types_to_quantize=["MatMul", "Attention"],
    )
    return output / "model.onnx"
