"""What the engine returns: plain data, no model code (the stream layer imports it)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Result:
    labels: list[str]  # passing labels, best first
    scores: dict[str, float]  # all 28, label -> P(label)
    no_label: bool
    truncated: bool
    tokens: int
    thresholds_hash: str  # the thresholds that decided `labels`

    def passing_scores(self) -> dict[str, float]:
        return {label: self.scores[label] for label in self.labels}


@dataclass
class Timing:
    tokenize_s: float = 0.0
    model_s: float = 0.0
    cache_hits: int = 0


@dataclass(frozen=True)
class ModelIdentity:
    embedder: str
    head: str
    thresholds_hash: str
    pooling: str
