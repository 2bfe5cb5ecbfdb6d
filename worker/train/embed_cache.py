"""Embed a split once with a given embedder and keep the vectors on disk."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
from tqdm import tqdm

from worker.engine.batching import iter_batches
from worker.engine.embedder import Embedder, find_encoder_file


def cache_key(embedder: Embedder, texts: list[str]) -> str:
    h = hashlib.sha256()
    encoder = find_encoder_file(embedder.model_dir)
    stat = encoder.stat()
    h.update(f"{encoder.resolve()}:{stat.st_size}:{embedder.pooling}:{embedder.max_length}".encode())
    for t in texts:
        h.update(t.encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def embed_texts(embedder: Embedder, texts: list[str], *, chunk: int = 2048, desc: str = "embed") -> np.ndarray:
    out = np.zeros((len(texts), 0), dtype=np.float32)
    with tqdm(total=len(texts), desc=desc, unit="text") as bar:
        for start in range(0, len(texts), chunk):
            part = texts[start : start + chunk]
            tokenized = embedder.tokenize(part)
            for batch in iter_batches(tokenized.ids, max_batch_size=32, token_budget=4096,
                                      pad_id=embedder.pad_id):
                vec = embedder.embed_padded(batch.ids, batch.mask)
                if out.shape[1] == 0:
                    out = np.zeros((len(texts), vec.shape[1]), dtype=np.float32)
                out[[start + i for i in batch.indices]] = vec
                bar.update(len(batch.indices))
    return out


def cached_embeddings(embedder: Embedder, texts: list[str], cache_dir: Path, *, desc: str) -> np.ndarray:
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"{desc}-{cache_key(embedder, texts)}.npy"
    if path.is_file():
        return np.asarray(np.load(path), dtype=np.float32)
    vectors = embed_texts(embedder, texts, desc=desc)
    np.save(path, vectors)
    return vectors
