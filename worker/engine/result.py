"""What the engine returns: plain data, no model code (the stream layer imports it)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FULL_PRECISION = 17  # decimals: a float's every digit, so no rounding at all


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

    def reported_scores(self, which: str, decimals: int, top_k: int | None = None) -> dict[str, float]:
        """The scores an output shows, rounded to `decimals`: all 28 in label order (`which` "all"),
        the passing ones best first ("passing"), or with `top_k` the K best, best first. Which
        scores and their order are decided on the unrounded values."""
        if top_k is not None:
            chosen = sorted(self.scores.items(), key=lambda item: item[1], reverse=True)[:top_k]
        elif which == "passing":
            chosen = list(self.passing_scores().items())
        else:
            chosen = list(self.scores.items())
        if decimals >= FULL_PRECISION:
            return dict(chosen)
        # One numpy call for all of them: 5x faster than round() per score, the worker's costliest
        # step per message outside the model (the same values: rint(p * 10**d) / 10**d).
        rounded = np.round(np.fromiter((p for _, p in chosen), np.float64, len(chosen)), decimals).tolist()
        return dict(zip((label for label, _ in chosen), rounded, strict=True))


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
