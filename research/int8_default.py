"""Should int8 be the default? fp32 against int8 embedders, each with thresholds tuned for itself.

    python -m research.int8_default --dev ../shared/data/go_emotions/dev.tsv \
        models/emotion-minilm-int8-onnx [more int8 exports ...]

For the fp32 embedder (--model, default: the default model's) and each int8 embedder given, all
with the same head (--head, default: the default model's): macro F1 on the split with thresholds
tuned there for that model (as `emotion-worker tune-thresholds` does, shrink 0.5), the held-out
halves figure (tuned on one random half, scored on the other; `tune-thresholds` prints it with 5
repeats, here --repeats, over several seeds to show its spread), the macro F1 with the fp32 model's
shipped thresholds, and label-set agreement with fp32 (each with its own tuned thresholds, and both
with the same thresholds, as `emotion-worker evaluate --against` reports). Rule (issue 21): int8
becomes the default when its held-out macro F1 is within 0.005 of fp32's. Writes nothing.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from worker.engine.engine import Engine, EngineOptions
from worker.engine.thresholds import Thresholds
from worker.model_choice import DEFAULT_HEAD_DIR
from worker.train.dataset import read_split
from worker.train.metrics import SHRINK, held_out_macro_f1, report, tune_thresholds

TOLERANCE = 0.005


def probabilities(embedder: Path, head: Path, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    engine = Engine(EngineOptions(embedder=str(embedder), head=str(head), cache_size=0))
    probs, _, _ = engine.probabilities(texts)
    return probs, engine.thresholds.vector


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--dev", type=Path, required=True, help="labelled GoEmotions split, e.g. dev.tsv")
    ap.add_argument("--model", type=Path, default=Path("models/emotion-minilm-onnx"), help="fp32 embedder")
    ap.add_argument("--head", type=Path, default=DEFAULT_HEAD_DIR)
    ap.add_argument("--repeats", type=int, default=5, help="random half splits per seed (tune-thresholds: 5)")
    ap.add_argument("--seeds", type=int, default=5, help="seeds for the held-out figure (tune-thresholds: seed 0)")
    ap.add_argument("int8", type=Path, nargs="+", help="int8 embedders to compare")
    args = ap.parse_args(argv)
    split = read_split(args.dev)
    y = split.targets
    ref, shipped = probabilities(args.model, args.head, split.texts)
    ref_tuned = Thresholds(tune_thresholds(y, ref, SHRINK)).vector

    def held_out(probs: np.ndarray) -> np.ndarray:
        return np.array([held_out_macro_f1(y, probs, SHRINK, repeats=args.repeats, seed=s) for s in range(args.seeds)])

    ref_held = held_out(ref)
    print(f"fp32 {args.model}: tuned {report(y, ref >= ref_tuned).macro()['f1']:.4f}; held out (seed 0) "
          f"{ref_held[0]:.4f}, seeds 0-{args.seeds - 1}: {ref_held.mean():.4f} +- {ref_held.std():.4f}; "
          f"shipped thresholds {report(y, ref >= shipped).macro()['f1']:.4f}", flush=True)
    for path in args.int8:
        probs, _ = probabilities(path, args.head, split.texts)
        own = Thresholds(tune_thresholds(y, probs, SHRINK)).vector
        held = held_out(probs)
        diff = held - ref_held  # same seeds, same halves: a paired difference
        own_sets = ((ref >= ref_tuned) == (probs >= own)).all(axis=1).mean()
        same_sets = ((ref >= shipped) == (probs >= shipped)).all(axis=1).mean()
        verdict = "within" if diff[0] >= -TOLERANCE else "NOT within"
        print(f"int8 {path}: tuned {report(y, probs >= own).macro()['f1']:.4f}; held out (seed 0) {held[0]:.4f} "
              f"({diff[0]:+.4f} vs fp32, {verdict} {TOLERANCE}), seeds: {held.mean():.4f} (difference "
              f"{diff.mean():+.4f}, from {diff.min():+.4f} to {diff.max():+.4f}); fp32's shipped thresholds "
              f"{report(y, probs >= shipped).macro()['f1']:.4f}; label sets identical to fp32: {own_sets:.1%} "
              f"(each its own tuned thresholds), {same_sets:.1%} (both the shipped ones); mean |dP| "
              f"{np.abs(probs - ref).mean():.4f}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
