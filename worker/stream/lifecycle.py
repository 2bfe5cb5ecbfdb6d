"""The stream side as one thing to start, run and close, in order, and how a run ended.

The lifecycle contract, for every part that holds a thread or a Kafka client: construction starts
nothing; `start()` starts it; `close(timeout) -> bool` ends it, True when it finished everything it
held. Whoever starts a part closes it: the stream starts and closes the publisher, the processing
threads and the consumer loop (which creates and closes the consumer).

    start:  publisher -> processing (inference threads) -> consumer loop (consumer, subscribe)
    close:  stop polling -> wait for in-flight work -> inference threads end -> publisher flushes
            -> the loop commits what was acknowledged, synchronously -> consumer closes

`run` returns the exit status: 0 clean (all consumed work published and committed), 1 stopped with
work unfinished or uncommitted (it is redone after a restart; nothing is lost), 3 a fatal Kafka
consumer error ended the run.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from enum import IntEnum

from worker.observe.health import Health
from worker.stream.consumer_loop import ConsumerLoop
from worker.stream.offsets import OffsetTracker
from worker.stream.outputs import Sender
from worker.stream.processing import Processing

log = logging.getLogger(__name__)


class ExitStatus(IntEnum):
    CLEAN = 0  # everything consumed was published and committed
    UNFINISHED = 1  # stopped with work not finished or not committed: redone after a restart
    FATAL = 3  # a fatal Kafka consumer error ended the run


@dataclass(frozen=True)
class StreamOptions:
    shutdown_timeout_s: float  # close: drain, flush, commit and close within this


class Stream:
    def __init__(self, loop: ConsumerLoop, processing: Processing, sender: Sender, tracker: OffsetTracker,
                 health: Health, options: StreamOptions) -> None:
        self.loop = loop
        self.processing = processing
        self.sender = sender
        self.tracker = tracker
        self.health = health
        self.options = options
        self.clean: bool | None = None  # set by close

    def start(self) -> None:
        self.sender.start()
        self.processing.start()
        for thread in [*self.sender.threads, *self.processing.threads]:
            self.health.watch(thread)
        self.health.output_check = self.sender.healthy
        self.loop.start()

    def run(self, stop: threading.Event) -> ExitStatus:
        """Start, consume until `stop` is set (or a fatal consumer error), then close within
        shutdown_timeout_s. Returns how the run ended."""
        try:
            self.start()
            self.loop.run(stop)
        finally:
            self.close(self.options.shutdown_timeout_s)
        return self.exit_status()

    def close(self, timeout: float) -> bool:
        """Drain, flush, commit and close, within `timeout`. True when every consumed message was
        published and its offset committed."""
        deadline = time.monotonic() + timeout

        def left(reserve: float) -> float:
            return max(0.0, deadline - time.monotonic() - reserve)

        self.health.stopping = True
        log.info("stopping: draining %d in-flight messages", self.tracker.unfinished())
        self.tracker.wait_drained(None, left(1.0))
        threads_ended = self.processing.close(max(0.2, left(1.0)))  # an idle thread notices in 0.1 s
        flushed = self.sender.close(max(0.1, left(0.5)))
        # Counted before the consumer closes: its revoke lets go of (forgets) what is unfinished.
        unfinished = self.tracker.unfinished()
        committed = self.loop.close(left(0.0))
        self.clean = unfinished == 0 and threads_ended and flushed and committed
        if unfinished:
            log.warning("stopped with %d messages unfinished; they were not committed and will be redone", unfinished)
        elif not committed:
            log.warning("stopped, but the last offset commit failed: what was done since the last commit will be "
                        "redone")
        log.info("stopped")
        return self.clean

    def exit_status(self) -> ExitStatus:
        if self.loop.fatal is not None:
            return ExitStatus.FATAL
        return ExitStatus.CLEAN if self.clean else ExitStatus.UNFINISHED

    def describe(self) -> dict[str, object]:
        """Where every unfinished message is: for `kill -USR1 <pid>` on a worker that seems stuck."""
        return {**self.loop.describe(), **self.processing.describe(), "publisher": self.sender.describe()}
