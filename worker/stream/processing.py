"""Everything between the consumer and Kafka's acknowledgement, as one step the consumer loop
submits to: decode, micro-batch, infer, release in partition order, publish.

    submit(ticket, envelope) -> decode -> rejected: its dead letter, in order
                                       -> decoded:  micro-batch -> inference threads
    inference / dead letter  -> OrderedRelease (each partition in consume order) -> Outputs -> publisher

Skipping useless work: the gate that keeps at-least-once is the offset tracker's `acknowledge`
(worker.stream.offsets). Work of a partition that went away (revoked, lost, re-fetched) may also be
skipped, to save time; `wanted` (the tracker's `is_current`) is asked at exactly two points: by the
inference threads before running the model (the message's outcome is then `Stale`) and by the
publisher before each send or resend of its record. Skipping is never needed for correctness.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from worker.observe.metrics import Metrics
from worker.stream.decode import decode
from worker.stream.inference import Classifier, InferenceThreads
from worker.stream.microbatch import MicroBatcher, estimated_tokens
from worker.stream.outputs import Outputs
from worker.stream.release import OrderedRelease
from worker.stream.types import Envelope, Outcome, PartitionId, Rejected, Ticket, Work


@dataclass(frozen=True)
class ProcessingOptions:
    text_field: str
    id_field: str
    max_value_bytes: int
    max_batch_size: int  # messages per micro-batch handed to the engine
    max_wait_s: float  # longest a message waits for its micro-batch to fill
    concurrent_batches: int  # micro-batches in inference at once
    max_batch_s: float | None = None  # a micro-batch's estimated compute time closes it at this (None: count only)


class Processing:
    def __init__(self, options: ProcessingOptions, classifier: Classifier, outputs: Outputs, metrics: Metrics, *,
                 wanted: Callable[[Ticket], bool]) -> None:
        self.options = options
        self.release: OrderedRelease[Work, Outcome] = OrderedRelease(lambda w: w.ticket, outputs.publish)
        self.batcher: MicroBatcher[Work] = MicroBatcher(options.max_batch_size, options.max_wait_s,
                                                        cost=_tokens, budget_s=options.max_batch_s)
        # Micro-batches side by side: while one is tokenised, finishing its last model call or
        # publishing, the other keeps the model threads busy.
        self.inference = InferenceThreads(classifier, self.batcher, self.release, metrics, wanted=wanted,
                                          count=options.concurrent_batches)

    @property
    def threads(self) -> list[threading.Thread]:
        """The inference threads (for the health check to watch)."""
        return self.inference.threads

    def start(self) -> None:
        """Start the inference threads."""
        self.inference.start()

    def submit(self, ticket: Ticket, envelope: Envelope) -> None:
        """A newly consumed message (called in consume order)."""
        o = self.options
        decoded = decode(envelope, text_field=o.text_field, id_field=o.id_field, max_value_bytes=o.max_value_bytes)
        message = None if isinstance(decoded, Rejected) else decoded
        work = Work(ticket, envelope, time.monotonic(), message)
        self.release.expect(work)
        if isinstance(decoded, Rejected):
            self.release.result_ready(work, decoded)
        else:
            self.batcher.put(work)

    def forget(self, tp: PartitionId) -> None:
        """A revoked or lost partition: drop what waits for release (its new owner redoes it)."""
        self.release.forget(tp)

    def close(self, timeout: float) -> bool:
        """Run what is queued through inference, then end the threads. True when they ended in time.
        (The publisher is not this step's: the stream that started it closes it.)"""
        return self.inference.close(timeout)

    def describe(self) -> dict[str, object]:
        return {"inference": self.inference.describe(), "release": self.release.describe()}


def _tokens(work: Work) -> float:
    return estimated_tokens(work.message.text) if work.message is not None else 0.0
