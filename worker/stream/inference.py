"""The inference threads: micro-batches in, one outcome per message out to the ordered release.

Each thread takes a micro-batch from the batcher and runs the engine on it; every model call's
results go to the release as soon as they are ready (it keeps each partition's order, whichever
micro-batch or call finishes first). A batch whose inference fails is retried one message at a
time; a message that fails alone becomes an `inference_error` dead letter, by the same path.
Work no longer `wanted` (its partition went away) is not run: its outcome is `Stale`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Protocol

from worker.engine.result import ModelIdentity, Result, Timing
from worker.observe.metrics import Metrics
from worker.stream.microbatch import MicroBatcher
from worker.stream.release import OrderedRelease
from worker.stream.types import STALE, Outcome, Rejected, Ticket, Work

log = logging.getLogger(__name__)

IDLE_WAIT_S = 0.1  # how long an idle thread waits for a first message before checking for stop


class Classifier(Protocol):
    """What the stream needs of the engine (worker.engine.engine.Engine)."""

    identity: ModelIdentity

    def classify(self, texts: list[str], timing: Timing | None = None) -> list[Result]: ...

    def classify_stream(self, texts: list[str], timing: Timing | None = None,
                        ) -> Iterator[list[tuple[int, Result]]]: ...


class InferenceThreads:
    def __init__(self, classifier: Classifier, batcher: MicroBatcher[Work], release: OrderedRelease[Work, Outcome],
                 metrics: Metrics, *, wanted: Callable[[Ticket], bool], count: int) -> None:
        self.classifier = classifier
        self.batcher = batcher
        self.release = release
        self.metrics = metrics
        self._wanted = wanted
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._counts = {"taken": 0, "current": 0, "results": 0}  # messages through inference, for describe()
        self.threads = [threading.Thread(target=self._run, name=f"inference-{n}", daemon=True) for n in range(count)]

    def start(self) -> None:
        for thread in self.threads:
            thread.start()

    def close(self, timeout: float) -> bool:
        """Finish what is queued, then end the threads. True when all ended within the timeout."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for thread in self.threads:
            if thread.is_alive():
                thread.join(timeout=max(0.0, deadline - time.monotonic()))
        return not any(t.is_alive() for t in self.threads)

    def _run(self) -> None:
        while True:
            batch = self.batcher.next_batch(idle_timeout_s=IDLE_WAIT_S)
            if batch:
                try:
                    self._infer(batch)
                finally:
                    self.batcher.done(batch)
            elif self._stop.is_set() and self.batcher.qsize() == 0:
                return

    def _infer(self, batch: list[Work]) -> None:
        work = []
        for w in batch:
            if self._wanted(w.ticket):
                work.append(w)
            else:  # its partition went away while it waited: not worth the model's time
                self.release.result_ready(w, STALE)
        with self._lock:
            self._counts["taken"] += len(batch)
            self._counts["current"] += len(work)
        if not work:
            return
        timing = Timing()
        finished: set[int] = set()
        try:
            texts = [_text(w) for w in work]
            for chunk in self.classifier.classify_stream(texts, timing):
                for i, result in chunk:
                    finished.add(i)
                    self.release.result_ready(work[i], result)
                with self._lock:
                    self._counts["results"] += len(chunk)
        except Exception:
            todo = [i for i in range(len(work)) if i not in finished]
            log.exception("inference failed for %d of a batch of %d; retrying them one by one", len(todo), len(work))
            for i in todo:
                self.release.result_ready(work[i], self._classify_one(work[i]))
        m = self.metrics
        m.batch_size.observe(len(work))
        m.inference_seconds.labels(stage="tokenize").observe(timing.tokenize_s)
        m.inference_seconds.labels(stage="model").observe(timing.model_s)
        if timing.cache_hits:
            m.cache_hits.inc(timing.cache_hits)

    def _classify_one(self, work: Work) -> Outcome:
        try:
            return self.classifier.classify([_text(work)])[0]
        except Exception as exc:
            return Rejected(work.envelope, "inference_error", f"{type(exc).__name__}: {exc}")

    def describe(self) -> dict[str, object]:
        with self._lock:
            counts = dict(self._counts)
        return {"queued": self.batcher.qsize(), **counts,
                "threads_alive": sum(t.is_alive() for t in self.threads)}


def _text(work: Work) -> str:
    assert work.message is not None, "only decoded messages are batched for inference"
    return work.message.text
