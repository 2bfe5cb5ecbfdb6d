"""Threshold reload without a restart (SIGHUP): re-read the thresholds file and the config file's
global and per-label overrides, validate them, and switch the engine to them between
micro-batches. Every result is labelled with one set of thresholds, and says which (its
`thresholds_hash`). An invalid file keeps the old thresholds: one log line and a failure count."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

from worker.config import load_settings
from worker.engine.engine import Engine
from worker.engine.thresholds import Thresholds
from worker.errors import WorkerError
from worker.labels import LABELS
from worker.observe.metrics import Metrics

log = logging.getLogger(__name__)


class ThresholdReloader:
    def __init__(self, engine: Engine, metrics: Metrics, config_path: Path | None) -> None:
        self.engine = engine
        self.metrics = metrics
        self.config_path = config_path

    def watched_files(self) -> list[Path]:
        """What a reload reads: the thresholds file in use and the config file."""
        files = [self.engine.thresholds_path(self.engine.options.thresholds_file)]
        return files + ([self.config_path] if self.config_path is not None else [])

    def watch(self, interval_s: float, stop: threading.Event) -> threading.Thread:
        """Reload whenever a watched file's modification time or size changes (checked every interval_s)."""

        def signature() -> list[tuple[int, int] | None]:
            out: list[tuple[int, int] | None] = []
            for path in self.watched_files():
                try:
                    st = path.stat()
                    out.append((st.st_mtime_ns, st.st_size))
                except OSError:
                    out.append(None)
            return out

        def run() -> None:
            last = signature()
            while not stop.wait(interval_s):
                now = signature()
                if now != last:
                    last = now
                    log.info("a thresholds or config file changed: reloading")
                    self.reload()

        thread = threading.Thread(target=run, name="threshold-watch", daemon=True)
        thread.start()
        return thread

    def reload(self) -> bool:
        """True when the new thresholds are in use (or were the same); False when they were refused."""
        old = self.engine.thresholds
        try:
            model = load_settings(self.config_path).model
            path = self.engine.thresholds_path(model.thresholds_file)
            new = Thresholds.load(path, global_override=model.threshold, per_label=model.label_thresholds)
        except WorkerError as exc:
            self.metrics.threshold_reloads.labels(result="failed").inc()
            log.error("threshold reload refused, still using %s: %s", old.digest(), str(exc).replace("\n", "; "))
            return False
        changed = [f"{label} {old.values[label]:g}->{new.values[label]:g}" for label in LABELS
                   if old.values[label] != new.values[label]]
        self.metrics.threshold_reloads.labels(result="ok").inc()
        if not changed:
            log.info("thresholds reloaded from %s: unchanged (%s)", path, old.digest())
            return True
        self.engine.use_thresholds(new)
        identity = self.engine.identity
        self.metrics.set_model(identity.embedder, identity.head, identity.thresholds_hash, identity.pooling)
        log.info("thresholds reloaded from %s: %s -> %s; %d changed: %s", path, old.digest(), new.digest(),
                 len(changed), ", ".join(changed))
        return True
