"""`emotion-worker evaluate`: the reference model card's tables for a model on a split, and how far
another embedder (an int8 export, say) moves its label sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from worker.engine.engine import Engine
from worker.engine.thresholds import Thresholds
from worker.labels import LABELS
from worker.train.dataset import Split, read_split
from worker.train.metrics import report


def evaluate_split(engine: Engine, split: Split | Path, against: Engine | None = None) -> dict[str, Any]:
    """The tables for `engine` on a labelled split (read already, or its path); with `against`, also
    how the other engine's label sets (same head and thresholds expected) differ from this one's on
    the same texts."""
    split = split if isinstance(split, Split) else read_split(split)
    probs, _, _ = engine.probabilities(split.texts)
    thresholds = engine.thresholds.vector
    at_tuned = report(split.targets, probs >= thresholds)
    at_half = report(split.targets, probs >= 0.5)
    tables = {
        "split": str(split.path),
        "rows": len(split.texts),
        "model": {"embedder": engine.identity.embedder, "head": engine.identity.head,
                  "thresholds_hash": engine.identity.thresholds_hash},
        "thresholds": {
            "per_label": {"macro": at_tuned.macro(), "weighted": at_tuned.weighted()},
            "0.5": {"macro": at_half.macro(), "weighted": at_half.weighted()},
        },
        "labels": [
            {"label": label, "f1": float(at_tuned.f1[j]), "precision": float(at_tuned.precision[j]),
             "recall": float(at_tuned.recall[j]), "support": int(at_tuned.support[j]),
             "threshold": float(thresholds[j])}
            for j, label in enumerate(LABELS)
        ],
    }
    if against is not None:
        other, _, _ = against.probabilities(split.texts)
        tables["against"] = {
            "embedder": against.identity.embedder,
            "head": against.identity.head,
            "macro_f1": report(split.targets, other >= thresholds).macro()["f1"],
            **agreement(probs, other, thresholds),
        }
    return tables


def agreement(probs: np.ndarray, other: np.ndarray, thresholds: np.ndarray) -> dict[str, Any]:
    """How often two models' label sets are identical, and which labels flip."""
    on, other_on = probs >= thresholds, other >= thresholds
    flips = (on != other_on).sum(axis=0)
    diff = np.abs(probs.astype(np.float64) - other)
    return {
        "label_sets_identical": float((on == other_on).all(axis=1).mean()),
        "mean_abs_dp": float(diff.mean()),
        "max_abs_dp": float(diff.max()),
        "flips": {label: int(flips[j]) for j, label in enumerate(LABELS) if flips[j]},
    }


def format_tables(t: dict[str, Any]) -> str:
    lines = [f"split {t['split']} ({t['rows']} rows); model {t['model']['embedder']} + {t['model']['head']}", ""]
    lines.append(f"{'thresholds':<12} {'average':<9} {'precision':>9} {'recall':>7} {'f1':>7}")
    for name, block in t["thresholds"].items():
        for avg in ("macro", "weighted"):
            m = block[avg]
            lines.append(f"{name:<12} {avg:<9} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['f1']:>7.3f}")
    lines += ["", f"{'label':<15} {'f1':>6} {'precision':>9} {'recall':>7} {'support':>8} {'threshold':>9}"]
    for row in sorted(t["labels"], key=lambda r: -np.float64(r["f1"])):
        lines.append(f"{row['label']:<15} {row['f1']:>6.3f} {row['precision']:>9.3f} {row['recall']:>7.3f} "
                     f"{row['support']:>8d} {row['threshold']:>9.2f}")
    a = t.get("against")
    if a:
        flips = sorted(a["flips"].items(), key=lambda kv: -kv[1])[:5]
        lines += ["", f"against {a['embedder']} + {a['head']}:",
                  f"  label sets identical on {a['label_sets_identical'] * 100:.1f}% of rows; "
                  f"mean |dP| {a['mean_abs_dp']:.4f}, max {a['max_abs_dp']:.3f}",
                  f"  macro F1 {a['macro_f1']:.3f} (this model {t['thresholds']['per_label']['macro']['f1']:.3f})",
                  "  most flipped: " + (", ".join(f"{label} {n}" for label, n in flips) or "none")]
    return "\n".join(lines)


def tune_on_split(engine: Engine, split: Split | Path, shrink: float) -> dict[str, Any]:
    """Thresholds tuned on a labelled split for this model, with the macro F1 they and the model's
    current ones reach there, and a held-out estimate (tuned on half the split, scored on the other)."""
    from worker.train.metrics import held_out_macro_f1, tune_thresholds

    split = split if isinstance(split, Split) else read_split(split)
    probs, _, _ = engine.probabilities(split.texts)
    tuned = tune_thresholds(split.targets, probs, shrink)
    vec = Thresholds(tuned).vector
    return {
        "thresholds": tuned,
        "macro_f1": report(split.targets, probs >= vec).macro()["f1"],
        "macro_f1_current": report(split.targets, probs >= engine.thresholds.vector).macro()["f1"],
        "macro_f1_held_out": held_out_macro_f1(split.targets, probs, shrink),
    }
