"""The engine: a list of texts in, one Result per text out, in input order."""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import replace
from pathlib import Path

import numpy as np
import onnxruntime as ort

from worker.engine.batching import iter_batches
from worker.engine.cache import ResultCache
from worker.engine.embedder import Embedder, Tokenized
from worker.engine.fold import PROBABILITIES, fold_head
from worker.engine.head import Head
from worker.engine.options import EngineOptions as EngineOptions  # re-exported: callers import it from here
from worker.engine.resolve import resolve_model_dir
from worker.engine.result import ModelIdentity, Result, Timing
from worker.engine.session import open_session
from worker.engine.thresholds import Thresholds
from worker.errors import ModelError
from worker.labels import LABELS

log = logging.getLogger(__name__)


class Engine:
    def __init__(self, options: EngineOptions) -> None:
        if options.threads < 1 or options.concurrent_calls < 1:
            raise ModelError("threads and concurrent_calls must be at least 1")
        runtime = replace(options.runtime, intra_op_threads=max(1, options.threads // options.concurrent_calls))
        self.options = options = replace(options, runtime=runtime)
        self._pool = (ThreadPoolExecutor(options.concurrent_calls, thread_name_prefix="model")
                      if options.concurrent_calls > 1 else None)
        embedder_dir = resolve_model_dir(options.embedder, what="embedder")
        head_dir = resolve_model_dir(options.head, what="head")
        self.embedder = Embedder(
            embedder_dir, options.runtime, max_length=options.max_length, pooling=options.pooling
        )
        self.head = Head(head_dir, options.runtime)
        self.head_dir = head_dir
        self.thresholds = Thresholds.load(
            self.thresholds_path(options.thresholds_file),
            global_override=options.threshold,
            per_label=options.label_thresholds,
        )
        # Keyed by (thresholds hash, text): a result cached under other thresholds is never served.
        self.cache: ResultCache[tuple[str, str], Result] = ResultCache(options.cache_size)
        self.identity = ModelIdentity(
            embedder=options.embedder,
            head=options.head,
            thresholds_hash=self.thresholds.digest(),
            pooling=self.embedder.pooling,
        )
        # The width the graphs declare: a head trained for another embedder is refused before any session opens.
        self.hidden_size: int | None = self.embedder.declared_width or self.head.input_width
        if self.hidden_size is not None:
            self.head.check_width(self.hidden_size)
        self.folded: ort.InferenceSession | None = self._fold(head_dir) if options.fold_head else None
        if self.folded is None:
            self._warm_up_separate_sessions()

    def thresholds_path(self, thresholds_file: str | None) -> Path:
        """The thresholds file in use: the configured one, else the head's thresholds.json."""
        return Path(thresholds_file) if thresholds_file else self.head_dir / "thresholds.json"

    def use_thresholds(self, thresholds: Thresholds) -> None:
        """Switch to other thresholds. A micro-batch already in classify_stream finishes with the
        ones it started with: every result is decided by one set, and carries its hash."""
        self.thresholds = thresholds
        self.identity = replace(self.identity, thresholds_hash=thresholds.digest())

    def _warm_up_separate_sessions(self) -> None:
        """Run one text through encoder and head, so the first real batch pays no start-up cost;
        checks the head against the width the encoder really produces."""
        vectors = self.embedder.embed_padded(*self._warm_up_batch())
        self.hidden_size = int(vectors.shape[1])
        self.head.check_width(self.hidden_size)
        probs = self.head.probabilities(vectors)
        if probs.shape != (1, len(LABELS)):
            raise ModelError(f"head produced shape {probs.shape}, expected (1, 28)")

    def _warm_up_batch(self) -> tuple[np.ndarray, np.ndarray]:
        tokenized = self.embedder.tokenize(["warm up the engine"])
        batch = next(iter_batches(tokenized.ids, max_batch_size=1, token_budget=10**6,
                                  pad_id=self.embedder.pad_id))
        return batch.ids, batch.mask

    def _fold(self, head_dir: Path) -> ort.InferenceSession | None:
        """One session for encoder, pooling and head, warmed up with one text; None (two sessions)
        if the models can't be joined."""
        try:
            folded = fold_head(self.embedder.encoder_file, self.embedder.output_name, self.embedder.pooling,
                               head_dir / "model.onnx")
            # Loaded from a file, not from the bytes: onnxruntime then keeps less memory (measured:
            # 213 MB against 348 MB for a bge-small-shaped fp32 model).
            with tempfile.TemporaryDirectory(prefix="emotion-worker-fold-") as tmp:
                path = Path(tmp) / "model.onnx"
                path.write_bytes(folded)
                del folded
                session = open_session(path, self.options.runtime)
            ids, mask = self._warm_up_batch()
            (probs,) = session.run([PROBABILITIES], self.embedder.feeds(ids, mask))
        except Exception as exc:  # a model the fold can't join still works, in two sessions
            log.warning("could not fold the head into the encoder (%s: %s); using separate sessions",
                        type(exc).__name__, exc)
            self.options = replace(self.options, fold_head=False)
            return None
        if probs.shape != (1, len(LABELS)):
            raise ModelError(f"head produced shape {probs.shape}, expected (1, 28)")
        return session

    def _score(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        if self.folded is not None:
            (probs,) = self.folded.run([PROBABILITIES], self.embedder.feeds(ids, mask))
            return np.asarray(probs, dtype=np.float32)
        return self.head.probabilities(self.embedder.embed_padded(ids, mask))

    def _tokenize(self, texts: list[str], timing: Timing) -> Tokenized:
        t0 = time.perf_counter()
        tokenized = self.embedder.tokenize(texts)
        timing.tokenize_s += time.perf_counter() - t0
        return tokenized

    def _scored_batches(self, tokenized: Tokenized, timing: Timing) -> Iterator[tuple[list[int], np.ndarray]]:
        """(positions, probabilities) per model call, as each call finishes.

        With concurrent_calls > 1 the calls run side by side on the model threads, each with
        threads // concurrent_calls cores: on CPUs two single-threaded calls beat one two-threaded
        call at every batch size (no per-operator hand-off between threads, and one busy core
        does not stall the other call).
        """
        batches = list(iter_batches(
            tokenized.ids,
            max_batch_size=self.options.call_batch_size,
            token_budget=self.options.token_budget,
            call_overhead_tokens=self.options.call_overhead_tokens,
            min_batches=self.options.concurrent_calls,
            pad_id=self.embedder.pad_id,
        ))
        # Cut by length, run by age: the call holding the oldest text goes first, so a long text
        # that came early does not wait behind every shorter one of a big micro-batch (positions
        # follow arrival order).
        batches.sort(key=lambda b: min(b.indices))
        if self._pool is None or len(batches) == 1:
            for batch in batches:
                t0 = time.perf_counter()
                probs = self._score(batch.ids, batch.mask)
                timing.model_s += time.perf_counter() - t0
                yield batch.indices, probs
            return
        running = {self._pool.submit(self._score, b.ids, b.mask): b.indices for b in batches}
        pending = set(running)
        try:
            while pending:
                t0 = time.perf_counter()
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                timing.model_s += time.perf_counter() - t0  # time spent waiting for the model
                for future in done:
                        yield running[future], future.result()
        finally:
            for future in pending:
                future.cancel()

    def probabilities(self, texts: list[str], timing: Timing | None = None) -> tuple[np.ndarray, list[bool], list[int]]:
        """(N, 28) probabilities, truncation flags and token counts, in input order."""
        timing = timing if timing is not None else Timing()
        tokenized = self._tokenize(texts, timing)
        probs = np.zeros((len(texts), len(LABELS)), dtype=np.float32)
        for indices, batch_probs in self._scored_batches(tokenized, timing):
            probs[indices] = batch_probs
        return probs, tokenized.truncated, [len(ids) for ids in tokenized.ids]

    def classify_stream(self, texts: list[str], timing: Timing | None = None) -> Iterator[list[tuple[int, Result]]]:
        """Results as they are ready: cache hits first, then one chunk per model call, as
        (input position, result) pairs. Every position appears exactly once."""
        timing = timing if timing is not None else Timing()
        thresholds = self.thresholds  # one set for the whole call, even if use_thresholds runs meanwhile
        digest = thresholds.digest()
        positions: dict[str, list[int]] = {}
        hits: list[tuple[int, Result]] = []
        for i, text in enumerate(texts):
            cached = self.cache.get((digest, text))
            if cached is not None:
                hits.append((i, cached))
            else:
                positions.setdefault(text, []).append(i)  # identical texts are computed once
        timing.cache_hits += len(hits)
        if hits:
            yield hits
        if not positions:
            return
        unique = list(positions)
        tokenized = self._tokenize(unique, timing)
        for indices, probs in self._scored_batches(tokenized, timing):
            rows, passed = probs.tolist(), thresholds.passed(probs).tolist()  # one conversion per call
            chunk: list[tuple[int, Result]] = []
            for row, k in enumerate(indices):
                result = self._result(rows[row], passed[row], tokenized.truncated[k], len(tokenized.ids[k]), digest)
                self.cache.put((digest, unique[k]), result)
                chunk.extend((i, result) for i in positions[unique[k]])
            yield chunk

    def classify(self, texts: list[str], timing: Timing | None = None) -> list[Result]:
        results: list[Result | None] = [None] * len(texts)
        for chunk in self.classify_stream(texts, timing):
            for i, result in chunk:
                results[i] = result
        return [r for r in results if r is not None]

    @staticmethod
    def _result(probs: list[float], passed: list[bool], truncated: bool, tokens: int, digest: str) -> Result:
        scores = dict(zip(LABELS, probs, strict=True))
        on = sorted([label for label, ok in zip(LABELS, passed, strict=True) if ok], key=scores.__getitem__,
                    reverse=True)
        return Result(labels=on, scores=scores, no_label=not on, truncated=truncated, tokens=tokens,
                      thresholds_hash=digest)

