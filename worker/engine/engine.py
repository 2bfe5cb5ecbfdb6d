"""The engine: a list of texts in, one Result per text out, in input order."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from worker.engine.batching import iter_batches
from worker.engine.cache import ResultCache
from worker.engine.embedder import Embedder
from worker.engine.head import Head
from worker.engine.resolve import resolve_model_dir
from worker.engine.result import ModelIdentity, Result, Timing
from worker.engine.session import RuntimeOptions
from worker.engine.thresholds import Thresholds
from worker.errors import ModelError
from worker.labels import LABELS


@dataclass(frozen=True)
class EngineOptions:
    embedder: str
    head: str
    max_length: int = 512
    pooling: str = "auto"
    threshold: float | None = None
    label_thresholds: dict[str, float] = field(default_factory=dict)
    max_batch_size: int = 16
    token_budget: int = 4096
    cache_size: int = 4096
    runtime: RuntimeOptions = field(default_factory=RuntimeOptions)


class Engine:
    def __init__(self, options: EngineOptions) -> None:
        self.options = options
        embedder_dir = resolve_model_dir(options.embedder, what="embedder")
        head_dir = resolve_model_dir(options.head, what="head")
        self.embedder = Embedder(
            embedder_dir, options.runtime, max_length=options.max_length, pooling=options.pooling
        )
        self.head = Head(head_dir, options.runtime)
        self.thresholds = Thresholds.load(
            head_dir / "thresholds.json",
            global_override=options.threshold,
            per_label=options.label_thresholds,
        )
        self.cache: ResultCache[Result] = ResultCache(options.cache_size)
        self.identity = ModelIdentity(
            embedder=options.embedder,
            head=options.head,
            thresholds_hash=self.thresholds.digest(),
            pooling=self.embedder.pooling,
        )
        self.warm_up()

    def warm_up(self) -> None:
        """Run once so the first real batch pays no start-up cost; checks head vs embedder width."""
        tokenized = self.embedder.tokenize(["warm up the engine"])
        batch = next(iter_batches(tokenized.ids, max_batch_size=1, token_budget=10**6,
                                  pad_id=self.embedder.pad_id))
        vectors = self.embedder.embed_padded(batch.ids, batch.mask)
        self.hidden_size = int(vectors.shape[1])
        self.head.check_width(self.hidden_size)
        probs = self.head.probabilities(vectors)
        if probs.shape != (1, len(LABELS)):
            raise ModelError(f"head produced shape {probs.shape}, expected (1, 28)")

    def probabilities(self, texts: list[str], timing: Timing | None = None) -> tuple[np.ndarray, list[bool], list[int]]:
        """(N, 28) probabilities, truncation flags and token counts, in input order."""
        timing = timing if timing is not None else Timing()
        t0 = time.perf_counter()
        tokenized = self.embedder.tokenize(texts)
        timing.tokenize_s += time.perf_counter() - t0
        probs = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        t1 = time.perf_counter()
        for batch in iter_batches(
            tokenized.ids,
            max_batch_size=self.options.max_batch_size,
            token_budget=self.options.token_budget,
            pad_id=self.embedder.pad_id,
        ):
            vectors = self.embedder.embed_padded(batch.ids, batch.mask)
            probs[batch.indices] = self.head.probabilities(vectors)
            timing.batches += 1
        timing.model_s += time.perf_counter() - t1
        return probs, tokenized.truncated, [len(ids) for ids in tokenized.ids]

    def classify(self, texts: list[str], timing: Timing | None = None) -> list[Result]:
        timing = timing if timing is not None else Timing()
        results: list[Result | None] = [self.cache.get(t) for t in texts]
        todo = [i for i, r in enumerate(results) if r is None]
        timing.cache_hits += len(texts) - len(todo)
        if todo:
            # Identical texts inside one call are computed once.
            unique = list(dict.fromkeys(texts[i] for i in todo))
            probs, truncated, tokens = self.probabilities(unique, timing)
            passed = self.thresholds.passed(probs)
            fresh = {
                text: self._result(probs[k], passed[k], truncated[k], tokens[k])
                for k, text in enumerate(unique)
            }
            for text, result in fresh.items():
                self.cache.put(text, result)
            for i in todo:
                results[i] = fresh[texts[i]]
        return [r for r in results if r is not None]

    @staticmethod
    def _result(probs: np.ndarray, passed: np.ndarray, truncated: bool, tokens: int) -> Result:
        scores = {label: float(p) for label, p in zip(LABELS, probs.tolist(), strict=True)}
        on = [LABELS[j] for j in np.flatnonzero(passed)]
        on.sort(key=lambda label: scores[label], reverse=True)
        return Result(labels=on, scores=scores, no_label=not on, truncated=truncated, tokens=tokens)

