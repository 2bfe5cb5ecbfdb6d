"""Per-label decision thresholds: thresholds.json, then a global and per-label overrides."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from worker.errors import ModelError
from worker.labels import LABELS, label_mismatch


class Thresholds:
    def __init__(self, values: Mapping[str, float]) -> None:
        mismatch = label_mismatch(list(values))
        if mismatch:
            raise ModelError(f"thresholds must cover the 28 GoEmotions labels; {mismatch}")
        bad = {k: v for k, v in values.items() if not 0.0 <= float(v) <= 1.0}
        if bad:
            raise ModelError(f"thresholds must lie in [0, 1]: {bad}")
        self.values = {label: float(values[label]) for label in LABELS}
        self.vector = np.array([self.values[label] for label in LABELS], dtype=np.float32)
        self._digest = hashlib.sha256(json.dumps(self.values, sort_keys=True).encode()).hexdigest()[:12]

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        global_override: float | None = None,
        per_label: Mapping[str, float] | None = None,
    ) -> Thresholds:
        if not path.is_file():
            raise ModelError(f"head has no thresholds file {path}")
        try:
            raw = json.loads(path.read_text())
        except ValueError as exc:
            raise ModelError(f"{path} is not valid JSON: {exc}") from exc
        if not isinstance(raw, dict):
            raise ModelError(f"{path} must be a flat JSON object of label -> threshold")
        values = {str(k): float(v) for k, v in raw.items()}
        if global_override is not None:
            values = dict.fromkeys(values, float(global_override))
        for label, value in (per_label or {}).items():
            if label not in LABELS:
                raise ModelError(f"threshold override for unknown label {label!r}")
            values[label] = float(value)
        return cls(values)

    def passed(self, probs: np.ndarray) -> np.ndarray:
        """Boolean (N, 28): P(label) >= threshold."""
        return np.asarray(probs >= self.vector)

    def digest(self) -> str:
        """A short hash of the values (computed once: the engine asks for it per micro-batch)."""
        return self._digest
