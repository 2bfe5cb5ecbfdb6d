"""Multi-label precision/recall/F1, macro and support-weighted, and per-label threshold tuning."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from worker.labels import LABELS

THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


@dataclass(frozen=True)
class Report:
    precision: np.ndarray  # (28,)
    recall: np.ndarray
    f1: np.ndarray
    support: np.ndarray

    def macro(self) -> dict[str, float]:
        return {"precision": float(self.precision.mean()), "recall": float(self.recall.mean()),
                "f1": float(self.f1.mean())}

    def weighted(self) -> dict[str, float]:
        w = self.support / max(self.support.sum(), 1)
        return {"precision": float((self.precision * w).sum()), "recall": float((self.recall * w).sum()),
                "f1": float((self.f1 * w).sum())}


def report(targets: np.ndarray, predicted: np.ndarray) -> Report:
    t = targets.astype(bool)
    p = predicted.astype(bool)
    tp = (t & p).sum(axis=0).astype(np.float64)
    fp = (~t & p).sum(axis=0).astype(np.float64)
    fn = (t & ~p).sum(axis=0).astype(np.float64)
    precision = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    recall = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    return Report(precision, recall, f1, t.sum(axis=0))


def tune_thresholds(targets: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """Per label, the grid threshold that maximises that label's F1 (ties: the lowest)."""
    best: dict[str, float] = {}
    for j, label in enumerate(LABELS):
        scores = [report(targets[:, j : j + 1], probs[:, j : j + 1] >= th).f1[0] for th in THRESHOLD_GRID]
        best[label] = float(THRESHOLD_GRID[int(np.argmax(scores))])
    return best
