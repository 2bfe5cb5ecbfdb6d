"""How threshold-tuning methods do on texts they were not tuned on: each is tuned on a random half
of a labelled split and scored on the other half, both ways, over several random splits, and
compared with per-label tuning alone on the same halves (paired).

    python -m research.threshold_methods --split ../shared/data/go_emotions/dev.tsv

The model: the default (fine-tuned) embedder and head unless --embedder / --head say otherwise.
Writes nothing; prints a Markdown table (docs/models.md has the run behind the shipped choice).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import numpy as np

from worker.default_model import default_embedder_dir
from worker.engine.engine import Engine, EngineOptions
from worker.engine.thresholds import Thresholds
from worker.labels import LABELS
from worker.model_choice import DEFAULT_HEAD_DIR
from worker.train.dataset import read_split
from worker.train.metrics import report, tune_thresholds

Method = Callable[[np.ndarray, np.ndarray], np.ndarray]


def shrunk(amount: float) -> Method:
    def tune(y: np.ndarray, p: np.ndarray) -> np.ndarray:
        return Thresholds(tune_thresholds(y, p, shrink=amount)).vector
    return tune


def per_label_fine(y: np.ndarray, p: np.ndarray) -> np.ndarray:
    grid = np.round(np.arange(0.01, 0.99, 0.01), 2)
    return np.array([grid[int(np.argmax([report(y[:, j:j + 1], p[:, j:j + 1] >= t).f1[0] for t in grid]))]
                     for j in range(len(LABELS))], dtype=np.float32)


METHODS: dict[str, Method] = {
    "flat 0.5": lambda y, p: np.full(len(LABELS), 0.5, dtype=np.float32),
    "one global threshold": shrunk(1.0),
    "per label, grid 0.05": shrunk(0.0),
    "per label, grid 0.01": per_label_fine,
    "per label, shrunk 25% towards the global one": shrunk(0.25),
    "per label, shrunk 50% towards the global one": shrunk(0.5),
    "per label, shrunk 75% towards the global one": shrunk(0.75),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--split", type=Path, required=True)
    ap.add_argument("--embedder", default=str(default_embedder_dir()))
    ap.add_argument("--head", default=str(DEFAULT_HEAD_DIR))
    ap.add_argument("--splits", type=int, default=10, help="random halvings (each scored both ways)")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    split = read_split(args.split, check_rows=False)
    y = split.targets
    p = Engine(EngineOptions(embedder=args.embedder, head=args.head, cache_size=0)).probabilities(split.texts)[0]
    rng = np.random.default_rng(args.seed)
    folds = []
    for _ in range(args.splits):
        order = rng.permutation(len(y))
        a, b = order[: len(y) // 2], order[len(y) // 2:]
        folds += [(a, b), (b, a)]

    def macro(rows: np.ndarray, th: np.ndarray) -> float:
        return report(y[rows], p[rows] >= th).macro()["f1"]

    scores = {name: np.array([macro(te, tune(y[tr], p[tr])) for tr, te in folds]) for name, tune in METHODS.items()}
    base = scores["per label, grid 0.05"]
    everything = np.arange(len(y))
    print("| method | tuned and scored on the whole split | held-out halves | vs per label alone (paired, ± s.e.) |")
    print("| --- | ---: | ---: | ---: |")
    for name, s in scores.items():
        d = s - base
        whole = macro(everything, METHODS[name](y, p))
        print(f"| {name} | {whole:.4f} | {s.mean():.4f} | {d.mean():+.4f} ± {d.std(ddof=1) / np.sqrt(len(d)):.4f} |")


if __name__ == "__main__":
    main()
