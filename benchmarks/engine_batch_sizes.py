"""The engine in memory, by micro-batch size: what a worker's model can do at the batch sizes that
keep latency low, against a backlog's (all texts in one call: one global length sort).

    python -m benchmarks.engine_batch_sizes --worker-model default-int8 --worker-model default

Unique GoEmotions dev texts (each with its number appended), the default settings (two
single-threaded model calls side by side), no cache; each size runs `--rounds` times, interleaved,
and the best round is kept (the machine drifts; the best is the least disturbed).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from benchmarks.bench import WORKER_MODELS, worker_model
from benchmarks.plain_e2e import unique_texts
from worker.engine.engine import Engine, EngineOptions
from worker.train.dataset import read_split

SIZES = (8, 16, 32, 64, 128)


def by_size(engine: Engine, texts: list[str], rounds: int) -> dict[str, float]:
    """texts/s for each micro-batch size in SIZES, and for all texts at once ("all")."""
    best: dict[str, float] = {}
    for _ in range(rounds):
        for size in (*SIZES, len(texts)):
            t0 = time.perf_counter()
            for i in range(0, len(texts), size):
                engine.probabilities(texts[i:i + size])
            key = "all" if size == len(texts) else str(size)
            best[key] = max(best.get(key, 0.0), len(texts) / (time.perf_counter() - t0))
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/go_emotions/dev.tsv"),
                    help="GoEmotions-style TSV of the texts (default: %(default)s)")
    ap.add_argument("--worker-model", choices=["default", "default-int8"], action="append",
                    help="the model (repeat for several; default: both)")
    ap.add_argument("--texts", type=int, default=2048, help="unique texts per size (default: 2048)")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the best is kept (default: 3)")
    ap.add_argument("--cache", type=Path, default=Path(".cache/bench"),
                    help="where the benchmark's models go (default: %(default)s)")
    args = ap.parse_args(argv)
    texts = unique_texts(read_split(args.data, check_rows=False).texts, args.texts)
    out: dict[str, dict[str, float]] = {}
    for name in args.worker_model or ["default-int8", "default"]:
        model, head = worker_model(name, args.cache)
        engine = Engine(EngineOptions(embedder=str(model), head=str(head), cache_size=0))
        engine.probabilities(texts[:64])  # warm
        out[name] = by_size(engine, texts, args.rounds)
        print(f"{WORKER_MODELS[name]}: " + ", ".join(f"{k}: {v:.0f}" for k, v in out[name].items()) + " texts/s",
              flush=True)
    print(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    from benchmarks.entry import run as run_script

    run_script(main)
