"""Turn a hub model or a local PyTorch/safetensors model into the ONNX layout the engine loads.

Needs the optional `export` extra (optimum-onnx, which pulls in torch); the runtime does not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from worker.engine.embedder_identity import EmbedderIdentity, weights_fingerprint, write_identity
from worker.errors import ModelError

KEEP_FILES = ("1_Pooling/config.json", "modules.json", "sentence_bert_config.json", "README.md")


def export_encoder(source: str, output: Path, *, opset: int | None = None, name: str | None = None,
                   identity: EmbedderIdentity | None = None) -> Path:
    """Export `source` (hub id or directory) as a feature-extraction encoder to `output`.

    Writes model.onnx (output `last_hidden_state`), the tokenizer files, the model's
    sentence-transformers pooling config where it has one, so the engine pools as the model says,
    and embedder.json: `identity`, or `name` (default: the hub id or the directory's name) and the
    fingerprint of the source weights.
    """
    try:
        from optimum.exporters.onnx import main_export
    except ImportError as exc:
        raise ModelError(
            "export needs the optional 'export' extra: pip install 'emotion-stream-worker[export]'"
        ) from exc
    output.mkdir(parents=True, exist_ok=True)
    try:
        main_export(
            source,
            output=output,
            task="feature-extraction",
            library_name="transformers",
            opset=opset,
            do_validation=False,
        )
    except Exception as exc:
        raise ModelError(f"export of {source!r} failed: {exc}") from exc
    src_dir = Path(source)
    if not src_dir.is_dir():
        from worker.engine.resolve import resolve_model_dir

        src_dir = resolve_model_dir(source, what="export source")
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
