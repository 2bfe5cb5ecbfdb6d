"""Tokenizer + ONNX encoder: token ids in, pooled L2-normalised sentence vectors out."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from tokenizers import Encoding, Tokenizer

from worker.engine.session import RuntimeOptions, open_session
from worker.errors import ModelError

TOKEN_OUTPUTS = ("last_hidden_state", "token_embeddings")


def find_encoder_file(model_dir: Path) -> Path:
    for candidate in ("model.onnx", "onnx/model.onnx"):
        if (model_dir / candidate).is_file():
            return model_dir / candidate
    raise ModelError(
        f"embedder directory {model_dir} has no ONNX encoder (looked for model.onnx and "
        "onnx/model.onnx). Export one with: emotion-worker export <model> --output <dir>"
    )


def graph_io(path: Path) -> tuple[set[str], dict[str, int | None]]:
    """The model's input names (initializers excluded), and its outputs with the last dimension
    each declares (None where not fixed); external weight files are not read."""
    try:
        graph = onnx.load(str(path), load_external_data=False).graph
    except Exception as exc:
        raise ModelError(f"cannot read ONNX model {path}: {exc}") from exc
    weights = {i.name for i in graph.initializer}
    outputs: dict[str, int | None] = {}
    for o in graph.output:
        dims = o.type.tensor_type.shape.dim
        outputs[o.name] = dims[-1].dim_value if dims and dims[-1].HasField("dim_value") else None
    return {i.name for i in graph.input if i.name not in weights}, outputs


def read_pooling(model_dir: Path) -> str:
    """'cls' or 'mean', as the model's sentence-transformers pooling config says; CLS otherwise."""
    cfg_path = model_dir / "1_Pooling" / "config.json"
    if not cfg_path.is_file():
        return "cls"
    cfg = json.loads(cfg_path.read_text())
    if cfg.get("pooling_mode_cls_token"):
        return "cls"
    if cfg.get("pooling_mode_mean_tokens"):
        return "mean"
    raise ModelError(f"{cfg_path}: only CLS and mean pooling are supported, got {cfg}")


def load_tokenizer(model_dir: Path) -> Tokenizer:
    """The fast tokenizer, with any padding/truncation pinned by its files turned off."""
    tok_file = model_dir / "tokenizer.json"
    if tok_file.is_file():
        tok = Tokenizer.from_file(str(tok_file))
    else:
        try:
            from transformers import AutoTokenizer
        except ImportError as exc:
            raise ModelError(f"{model_dir} has no tokenizer.json; converting its tokenizer needs transformers "
                             "(pip install transformers), or export the model again") from exc
        try:
            tok = AutoTokenizer.from_pretrained(str(model_dir), use_fast=True).backend_tokenizer  # type: ignore[no-untyped-call]
        except Exception as exc:
            raise ModelError(f"cannot load a tokenizer from {model_dir}: {exc}") from exc
    tok.no_padding()
    tok.no_truncation()
    return tok


@dataclass(frozen=True)
class Tokenized:
    ids: list[list[int]]
    truncated: list[bool]


class Embedder:
    def __init__(
        self,
        model_dir: Path,
        runtime: RuntimeOptions,
        *,
        max_length: int = 512,
        pooling: str = "auto",
    ) -> None:
        self.model_dir = model_dir
        self.max_length = max_length
        self.encoder_file = find_encoder_file(model_dir)
        self.runtime = runtime
        self.tokenizer = load_tokenizer(model_dir)
        self.tokenizer.enable_truncation(max_length=max_length)
        self.pooling = read_pooling(model_dir) if pooling == "auto" else pooling
        if self.pooling not in ("cls", "mean"):
            raise ModelError(f"pooling must be 'auto', 'cls' or 'mean', got {self.pooling!r}")
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.pad_id = 0 if pad_id is None else pad_id
        self.input_names, outputs = graph_io(self.encoder_file)
        token_out = next((name for name in TOKEN_OUTPUTS if name in outputs), None)
        if token_out is None:
            raise ModelError(
                f"embedder {model_dir}: ONNX outputs {list(outputs)} include neither last_hidden_state "
                "nor token_embeddings"
            )
        self.output_name = token_out
        # The hidden width the graph declares for its token output, if fixed.
        self.declared_width = outputs[token_out]
        missing = {"input_ids", "attention_mask"} - self.input_names
        if missing:
            raise ModelError(f"embedder {model_dir}: ONNX inputs lack {sorted(missing)}")
        self._session: ort.InferenceSession | None = None

    @property
    def session(self) -> ort.InferenceSession:
        """Opened on first use: an engine that folds the head into the encoder never opens it."""
        if self._session is None:
            self._session = open_session(self.encoder_file, self.runtime)
        return self._session

    def tokenize(self, texts: list[str]) -> Tokenized:
        encodings: list[Encoding] = self.tokenizer.encode_batch(texts)
        return Tokenized(
            ids=[e.ids for e in encodings],
            truncated=[bool(e.overflowing) for e in encodings],
        )

    def feeds(self, ids: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        feed = {"input_ids": ids, "attention_mask": mask}
        if "token_type_ids" in self.input_names:
            feed["token_type_ids"] = np.zeros_like(ids)
        return feed

    def pool(self, hidden: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.pooling == "cls":
            vec = hidden[:, 0]
        else:
            m = mask[:, :, None].astype(hidden.dtype)
            vec = (hidden * m).sum(axis=1) / np.maximum(m.sum(axis=1), 1e-9)
        norm = np.linalg.norm(vec, axis=1, keepdims=True)
        return np.asarray(vec / np.maximum(norm, 1e-12), dtype=np.float32)

    def embed_padded(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        (hidden,) = self.session.run([self.output_name], self.feeds(ids, mask))
        return self.pool(np.asarray(hidden), mask)
