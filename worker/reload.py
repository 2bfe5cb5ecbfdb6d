"""Threshold reload without a restart (SIGHUP): re-read the thresholds file and the config file's
global and per-label overrides, validate them, and switch the engine to them between
micro-batches. Every result is labelled with one set of thresholds, and says which (its
`thresholds_hash`). An invalid file keeps the old thresholds: one log line and a failure count.
Other settings that changed in the config file need a restart: one warning line names them."""

from __future__ import annotations

import hashlib
import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from worker.config import Settings, config_file_of, is_secret, load_settings, origin_of
from worker.engine.engine import Engine
from worker.engine.thresholds import Thresholds
from worker.errors import WorkerError
from worker.labels import LABELS
from worker.observe.logs import AS_IS
from worker.observe.metrics import Metrics

log = logging.getLogger(__name__)

# The settings a reload applies; every other one is read at start only.
RELOADED = {"model.thresholds_file", "model.threshold", "model.label_thresholds"}


def _leaves(value: Any, prefix: str) -> dict[str, Any]:
    """Settings as dotted names: kafka.common's properties and other mappings one name per key."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, sub in value.items():
            out.update(_leaves(sub, f"{prefix}.{key}" if prefix else str(key)))
        return out
    return {prefix: value}


def _in_settings_order(name: str) -> tuple[int, int, str]:
    """Sections and their fields in the order Settings declares them (kafka, ..., observe)."""
    section, _, rest = name.partition(".")
    sections = list(Settings.model_fields)
    i = sections.index(section) if section in sections else len(sections)
    model = getattr(Settings.model_fields[section].annotation, "model_fields", {}) if i < len(sections) else {}
    fields = list(model)
    field = rest.partition(".")[0]
    return i, fields.index(field) if field in fields else len(fields), name


def needing_restart(running: Settings, new: Settings) -> list[str]:
    """The settings that differ between the ones in use and `new`, but take a restart to apply:
    'observe.port (9108 -> 9200)'; secret values masked."""
    before, after = _leaves(running.model_dump(), ""), _leaves(new.model_dump(), "")
    changed = []
    for name in sorted(before.keys() | after.keys(), key=_in_settings_order):
        if any(name == r or name.startswith(r + ".") for r in RELOADED):
            continue
        old, now = before.get(name, "(unset)"), after.get(name, "(unset)")
        if old != now:
            shown = ("***", "***") if is_secret(name) else (old, now)
            changed.append(f"{name} ({shown[0]} -> {shown[1]})")
    return changed


def _file_digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return None


@dataclass(frozen=True)
class ThresholdSources:
    """What the thresholds in use were made from: the thresholds file (its path, whether it is the
    head's own thresholds.json, its content) and the config's global and per-label overrides."""

    path: Path
    own_file: bool  # the head's thresholds.json (model.thresholds_file unset)
    file_digest: str | None
    threshold: float | None
    label_thresholds: dict[str, float]
    settings: Settings | None = None  # where the overrides came from (None: not known)

    def _origin(self, name: str, other: ThresholdSources) -> str:
        """' in /etc/worker.yaml line 7': where `model.<name>` is (or was) set."""
        known = [s for s in (self.settings, other.settings) if s is not None]
        for s in known:
            origin = origin_of(s, ("model", name))
            if origin.kind != "default":
                return f" in {origin.where()}"
        files = [config_file_of(s) for s in known]
        return next((f" in {f}" for f in files if f is not None), "")

    def changes_since(self, before: ThresholdSources) -> list[str]:
        """The sources that differ from `before`, in words: 'model.threshold 0.5 -> 0.3 in
        /etc/worker.yaml line 7', 'the head's thresholds.json /m/head/thresholds.json'."""
        out = []
        if self.threshold != before.threshold:
            old = "unset" if before.threshold is None else f"{before.threshold:g}"
            new = "unset" if self.threshold is None else f"{self.threshold:g}"
            out.append(f"model.threshold {old} -> {new}{self._origin('threshold', before)}")
        if self.label_thresholds != before.label_thresholds:
            labels = sorted(set(self.label_thresholds) | set(before.label_thresholds))
            moved = [label for label in labels
                     if self.label_thresholds.get(label) != before.label_thresholds.get(label)]
            out.append(f"model.label_thresholds ({', '.join(moved)}){self._origin('label_thresholds', before)}")
        if self.path != before.path:
            out.append(f"model.thresholds_file {_file_name(before)} -> {_file_name(self)}"
                       f"{self._origin('thresholds_file', before)}")
        elif self.file_digest != before.file_digest:
            out.append(f"{_file_name(self)} (its content)")
        return out


def _file_name(s: ThresholdSources) -> str:
    return f"the head's thresholds.json {s.path}" if s.own_file else f"thresholds file {s.path}"


class ThresholdReloader:
    def __init__(self, engine: Engine, metrics: Metrics, config_path: Path | None,
                 running: Settings | None = None) -> None:
        """`running`: the settings the worker started with; a reload names those it cannot apply."""
        self.engine = engine
        self.metrics = metrics
        self.config_path = config_path
        self.running = running
        o = engine.options
        path = engine.thresholds_path(o.thresholds_file)
        # what the thresholds in use were made from: a reload says which of these changed
        self.applied = ThresholdSources(path, not o.thresholds_file, _file_digest(path), o.threshold,
                                        dict(o.label_thresholds), running)

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

        last = signature()  # taken before watch() returns: a change made after it is always seen

        def run() -> None:
            nonlocal last
            while not stop.wait(interval_s):
                now = signature()
                if now != last:
                    last = now
                    log.info("a thresholds or config file changed: reloading")
                    self.reload(trigger="config change")

        thread = threading.Thread(target=run, name="threshold-watch", daemon=True)
        thread.start()
        return thread

    def reload(self, trigger: str = "SIGHUP") -> bool:
        """True when the new thresholds are in use (or were the same); False when they were refused.
        Changed settings that need a restart are named in one warning either way."""
        old = self.engine.thresholds
        try:
            settings = load_settings(self.config_path)
            self._warn_restart_needed(settings, trigger)
            model = settings.model
            path = self.engine.thresholds_path(model.thresholds_file)
            sources = ThresholdSources(path, not model.thresholds_file, _file_digest(path), model.threshold,
                                       dict(model.label_thresholds), settings)
            new = Thresholds.load(path, global_override=model.threshold, per_label=model.label_thresholds)
        except WorkerError as exc:
            self.metrics.threshold_reloads.labels(result="failed").inc()
            log.error("threshold reload refused, still using %s: %s", old.digest(), str(exc).replace("\n", "; "))
            return False
        # what changed among the sources: the file, model.threshold, model.label_thresholds
        why = "; ".join(sources.changes_since(self.applied)) or f"no source changed ({_file_name(sources)})"
        self.applied = sources
        changed = [f"{label} {old.values[label]:g}->{new.values[label]:g}" for label in LABELS
                   if old.values[label] != new.values[label]]
        self.metrics.threshold_reloads.labels(result="ok").inc()
        if not changed:
            log.info("thresholds reloaded (%s): unchanged (%s)", why, old.digest())
            return True
        self.engine.use_thresholds(new)
        identity = self.engine.identity
        self.metrics.set_model(identity.embedder, identity.head, identity.thresholds_hash, identity.pooling)
        log.info("thresholds reloaded (%s): %s -> %s; %d changed: %s", why, old.digest(), new.digest(),
                 len(changed), ", ".join(changed))
        return True

    def _warn_restart_needed(self, settings: Settings, trigger: str) -> None:
        if self.running is None:
            return
        changed = needing_restart(self.running, settings)
        if changed:
            log.warning("%s: these changed settings need a restart and were not applied: %s", trigger,
                        ", ".join(changed), extra=AS_IS)
