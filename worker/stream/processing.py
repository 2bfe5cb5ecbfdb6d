"""Everything between the consumer and Kafka's acknowledgement, as one step the consumer loop
submits to: decode, micro-batch, infer, release in partition order, publish.

    submit(ticket, envelope) -> decode -> rejected: its dead letter, in order
                                       -> decoded:  micro-batch -> inference threads
    inference / dead letter  -> OrderedRelease (each partition in consume order) -> Outputs -> publisher
"""

from __future__ import annotations

import threading
import time

from worker.config import Settings
from worker.observe.metrics import Metrics
from worker.stream.decode import Envelope, Rejected, decode
from worker.stream.inference import Classifier, InferenceThreads
from worker.stream.microbatch import MicroBatcher
from worker.stream.offsets import OffsetTracker, PartitionId, Ticket
from worker.stream.outputs import Outcome, Outputs, Work
from worker.stream.release import OrderedRelease


class Processing:
    def __init__(self, settings: Settings, classifier: Classifier, outputs: Outputs, tracker: OffsetTracker,
                 metrics: Metrics) -> None:
        self.input = settings.input
        self.outputs = outputs
        self.release: OrderedRelease[Work, Outcome] = OrderedRelease(
            lambda w: w.ticket, outputs.publish, tracker.is_current)
        b = settings.batching
        self.batcher: MicroBatcher[Work] = MicroBatcher(b.max_batch_size, b.max_wait_ms / 1000)
        # Micro-batches side by side: while one is tokenised, finishing its last model call or
        # publishing, the other keeps the model threads busy.
        self.inference = InferenceThreads(classifier, self.batcher, self.release, metrics,
                                          is_current=tracker.is_current, count=b.concurrent_batches)

    def start(self) -> list[threading.Thread]:
        """Start the inference threads; returns them (for the health check to watch)."""
        return self.inference.start()

    def submit(self, ticket: Ticket, envelope: Envelope) -> None:
        """A newly consumed message (called in consume order)."""
        i = self.input
        decoded = decode(envelope, text_field=i.text_field, id_field=i.id_field, max_value_bytes=i.max_value_bytes)
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

    def join(self, timeout: float) -> int:
        """Finish the queued work and flush the publisher. Returns how many records are left unacknowledged."""
        deadline = time.monotonic() + timeout
        self.inference.stop(max(0.0, deadline - time.monotonic() - 0.5))
        return self.outputs.close(max(0.1, deadline - time.monotonic()))

    def describe(self) -> dict[str, object]:
        return {"inference": self.inference.describe(), "release": self.release.describe(),
                "publisher": self.outputs.sender.describe()}
