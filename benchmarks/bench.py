r"""Throughput and latency, in one run, on the same texts and the same model.

    python -m benchmarks.bench --data ../shared/data/go_emotions/dev.tsv --out benchmarks/results

1. naive baseline (plain onnxruntime, batches of 32 in arrival order padded to the longest, fp32,
   default session options, then the head); 2. the engine, fp32 and int8; 3. the peer:
   sentence-transformers with its ONNX backend on the same exported model (when installed);
4. the whole worker through a real local broker with a backlog, against the plain worker a user
   would write instead (benchmarks/plain_worker.py; same model, same unique texts, run right before
   and right after it); 5. end-to-end latency (input record timestamp to output record timestamp)
   at 50% (twice) and 80% of the measured backlog rate and at a trickle of 1 msg/s, and the plain
   worker's at 50% of its own; 6. the worker's peak RSS. In-memory runs are interleaved in
   rounds and the median is reported, so machine drift hits every contender alike.

    python -m benchmarks.bench --only-worker --worker-model default-int8 --worker-model default \
        --worker-messages 5000 --out benchmarks/results/worker

runs the worker part for each model given, in one run, and writes worker.json, worker-table.md and
worker.png (msg/s and p99, fp32 and int8, the plain worker against this one).
The model is a random-weight BERT of bge-small-en's exact shape (speed does not depend on weights).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from testkit.models import BGE_SMALL_SHAPE, build_random_encoder, build_random_head
from worker.engine.engine import Engine, EngineOptions
from worker.engine.export import quantize_int8
from worker.model_choice import FROZEN_HEAD_DIR
from worker.train.dataset import read_split

Runner = Callable[[list[str]], None]


def prepare_models(cache: Path) -> dict[str, Path]:
    fp32 = cache / "bge-small-shape-onnx"
    int8 = cache / "bge-small-shape-int8-onnx"
    head = cache / "head-384"
    if not (fp32 / "model.onnx").is_file():
        build_random_encoder(fp32, **BGE_SMALL_SHAPE)
    if not (int8 / "model.onnx").is_file():
        quantize_int8(fp32, int8)
    if not (head / "model.onnx").is_file():
        build_random_head(head, BGE_SMALL_SHAPE["hidden"])
    return {"fp32": fp32, "int8": int8, "head": head}


def naive_runner(model_dir: Path, head_dir: Path) -> Runner:
    """What a user would write first: arrival order, batches of 32, padded to the batch's longest."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(model_dir))
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    head = ort.InferenceSession(str(head_dir / "model.onnx"), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}

    def run(texts: list[str]) -> None:
        for i in range(0, len(texts), 32):
            enc = tok(texts[i : i + 32], padding=True, truncation=True, max_length=512, return_tensors="np")
            feeds = {k: v.astype(np.int64) for k, v in enc.items() if k in names}
            hidden = sess.run(["last_hidden_state"], feeds)[0]
            cls = hidden[:, 0]
            cls = cls / np.linalg.norm(cls, axis=1, keepdims=True)
            head.run(None, {"logits": cls.astype(np.float32)})

    return run


def engine_runner(model_dir: Path, head_dir: Path) -> tuple[Runner, Engine]:
    engine = Engine(EngineOptions(embedder=str(model_dir), head=str(head_dir), cache_size=0))

    def run(texts: list[str]) -> None:
        engine.probabilities(texts)

    return run, engine


def peer_runner(model_dir: Path, head_dir: Path, work: Path) -> Runner | None:
    """sentence-transformers with its ONNX backend on the same model: CLS pooling + normalise."""
    try:
        from sentence_transformers import SentenceTransformer, models
    except ImportError:
        return None
    transformer = models.Transformer(str(model_dir), backend="onnx", model_kwargs={"file_name": "model.onnx"})
    pooling = models.Pooling(transformer.get_word_embedding_dimension(), pooling_mode="cls")
    st = SentenceTransformer(modules=[transformer, pooling, models.Normalize()], device="cpu")
    head = ort.InferenceSession(str(head_dir / "model.onnx"), providers=["CPUExecutionProvider"])

    def run(texts: list[str]) -> None:
        vec = st.encode(texts, batch_size=32, convert_to_numpy=True)
        head.run(None, {"logits": np.asarray(vec, dtype=np.float32)})

    return run


def interleaved(runners: dict[str, Runner], texts: list[str], rounds: int) -> dict[str, dict[str, float]]:
    times: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():
        run(texts[:64])  # warm-up
    for _ in range(rounds):
        for name, run in runners.items():
            t0 = time.perf_counter()
            run(texts)
            times[name].append(time.perf_counter() - t0)
    return {name: {"texts_per_s": len(texts) / statistics.median(ts), "seconds": statistics.median(ts),
                   "rounds": len(ts)} for name, ts in times.items()}


# Each step of the engine, added one at a time: what it gained, int8, same texts, interleaved rounds.
STEPS: list[tuple[str, dict[str, Any]]] = [
    ("before: sort + greedy cuts, separate head, one 2-thread call at a time",
     {"call_overhead_tokens": 10**6, "fold_head": False, "concurrent_calls": 1}),
    ("+ cost-based cuts", {"fold_head": False, "concurrent_calls": 1}),
    ("+ head folded into the encoder graph", {"concurrent_calls": 1}),
    ("+ two single-threaded calls side by side (all steps: the default)", {}),
]


def step_gains(model_dir: Path, head_dir: Path, texts: list[str], rounds: int) -> dict[str, Any]:
    """The engine with each step switched on in turn, on micro-batches of 16 texts in arrival
    order (what the worker gets at moderate load) and of 128 (a backlog)."""
    out: dict[str, Any] = {}
    for chunk in (16, 128):
        runners: dict[str, Runner] = {}
        for name, overrides in STEPS:
            engine = Engine(EngineOptions(embedder=str(model_dir), head=str(head_dir), cache_size=0, **overrides))

            def run(batch: list[str], engine: Engine = engine, chunk: int = chunk) -> None:
                for i in range(0, len(batch), chunk):
                    engine.probabilities(batch[i : i + chunk])

            runners[name] = run
        out[f"micro_batches_of_{chunk}"] = interleaved(runners, texts, rounds)
    return out


def single_text_latency(engine: Engine, texts: list[str]) -> dict[str, float]:
    lat = []
    for t in texts:
        t0 = time.perf_counter()
        engine.probabilities([t])
        lat.append((time.perf_counter() - t0) * 1000)
    return percentiles(lat)


def percentiles(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"p50": float(np.percentile(arr, 50)), "p95": float(np.percentile(arr, 95)),
            "p99": float(np.percentile(arr, 99)), "n": int(arr.size)}


COMMON_CHAT = ["lol", "thanks!", "gg", "lmao", "nice", "omg", "thank you so much", "wow", "hahaha", "love it",
               "same", "no way", "yes!", "ugh", "rip", "congrats!", "good morning", "hi everyone", "ok", "what?"]


def cache_effect(model_dir: Path, head_dir: Path, texts: list[str], repeat_share: float = 0.3) -> dict[str, Any]:
    """A chat-like stream where `repeat_share` of messages are common short lines: the recent-text
    cache against no cache, same engine, one pass each after a warm-up."""
    import random

    rng = random.Random(3)
    stream = [rng.choice(COMMON_CHAT) if rng.random() < repeat_share else t for t in texts]
    out: dict[str, Any] = {"repeat_share": repeat_share, "texts": len(stream)}
    for name, size in (("no_cache", 0), ("cache", 4096)):
        engine = Engine(EngineOptions(embedder=str(model_dir), head=str(head_dir), cache_size=size))
        engine.classify(stream[:32])
        t0 = time.perf_counter()
        for i in range(0, len(stream), 64):  # micro-batches, as the worker hands them over
            engine.classify(stream[i : i + 64])
        out[name] = len(stream) / (time.perf_counter() - t0)
    out["gain"] = out["cache"] / out["no_cache"]
    return out


def head_share(engine: Engine, texts: list[str]) -> dict[str, float]:
    """How much of a model call the separate head session costs (the case for folding it in)."""
    tokenized = engine.embedder.tokenize(texts[:16])
    from worker.engine.batching import pad_batch

    batch = pad_batch(tokenized.ids, list(range(len(tokenized.ids))), engine.embedder.pad_id)
    t0 = time.perf_counter()
    for _ in range(20):
        vec = engine.embedder.embed_padded(batch.ids, batch.mask)
    t1 = time.perf_counter()
    for _ in range(20):
        engine.head.probabilities(vec)
    t2 = time.perf_counter()
    return {"encoder_ms": (t1 - t0) / 20 * 1000, "head_ms": (t2 - t1) / 20 * 1000,
            "head_share": (t2 - t1) / (t2 - t0)}


def quality(data_dir: Path) -> dict[str, Any] | None:
    """int8 vs fp32 with the frozen MiniLM baseline on the full dev split."""
    from worker.evaluate import agreement
    from worker.train.metrics import report

    fp32 = Path("models/all-MiniLM-L6-v2-onnx")
    int8 = Path("models/all-MiniLM-L6-v2-int8-onnx")
    if not (fp32 / "model.onnx").is_file() or not (data_dir / "dev.tsv").is_file():
        return None
    if not (int8 / "model.onnx").is_file():
        quantize_int8(fp32, int8)
    dev = read_split(data_dir / "dev.tsv")
    probs = {}
    out: dict[str, Any] = {}
    for name, path in (("fp32", fp32), ("int8", int8)):
        engine = Engine(EngineOptions(embedder=str(path), head=str(FROZEN_HEAD_DIR), cache_size=0))
        probs[name], _, _ = engine.probabilities(dev.texts)
        thresholds = engine.thresholds.vector
        out[f"macro_f1_{name}"] = report(dev.targets, probs[name] >= thresholds).macro()["f1"]
    out["label_set_agreement"] = agreement(probs["fp32"], probs["int8"], thresholds)["label_sets_identical"]
    out["rows"] = len(dev.texts)
    return out


def worker_runs(model: Path, head: Path, texts: list[str], n: int, worker_env: dict[str, str],
                plain: bool, work: Path, load_seconds: float = 10.0, search: bool = True) -> dict[str, Any]:
    """The worker's runs (worker_e2e) on unique texts and, unless `plain` is false, the plain worker's
    backlog on the same first n texts before and after them, and its latency at 50% of that rate
    (on texts of the worker's load runs); the ratio of the two backlog rates."""
    from benchmarks.plain_e2e import plain_backlog, plain_load, unique_texts
    from benchmarks.worker_e2e import run_worker_benchmarks, standard_loads

    # The backlog's n, then the split once more for the latency runs, every text unique.
    unique = unique_texts(texts, n + len(texts))
    before = plain_backlog(model, head, unique[:n], work) if plain else None
    loads = standard_loads(load_seconds, 20.0 if load_seconds >= 10 else load_seconds)
    out = run_worker_benchmarks(model, head, unique, n, worker_env=worker_env, loads=loads, search=search)
    out["texts"] = "unique: each split text with its number appended"
    if before is not None:
        after = plain_backlog(model, head, unique[:n], work)
        rate = (before["texts_per_s"] + after["texts_per_s"]) / 2
        out["plain_worker"] = {"program": "benchmarks/plain_worker.py", "texts_per_s": rate,
                               "before_after": [before["texts_per_s"], after["texts_per_s"]]}
        load = plain_load(model, head, unique[n:], rate / 2, load_seconds, work)
        out["plain_worker"]["load_50"] = {**load, "fraction_of_backlog": 0.5}
        print(f"plain worker at 50% load: p50 {load.get('p50_ms', 0):.0f} / p99 {load.get('p99_ms', 0):.0f} ms",
              flush=True)
        out["backlog"]["vs_plain_worker"] = out["backlog"]["texts_per_s"] / rate
        print(f"plain worker backlog: {rate:.1f} texts/s (before {before['texts_per_s']:.1f}, after "
              f"{after['texts_per_s']:.1f}); this worker {out['backlog']['vs_plain_worker']:.2f}x it", flush=True)
    return out


WORKER_MODELS = {"bge-shape-int8": "the bge-small-en-shaped model, int8", "default": "the default model, fp32",
                 "default-int8": "the default model, int8 (model.precision int8)"}


def worker_model(name: str, cache: Path) -> tuple[Path, Path]:
    """The embedder and head directories of a --worker-model choice."""
    from worker.model_choice import DEFAULT_HEAD_DIR, DEFAULT_HEAD_INT8_DIR

    if name == "default":
        return Path("models/emotion-minilm-onnx"), DEFAULT_HEAD_DIR
    if name == "default-int8":
        return Path("models/emotion-minilm-int8-onnx"), DEFAULT_HEAD_INT8_DIR
    models = prepare_models(cache)
    return models["int8"], models["head"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/go_emotions/dev.tsv"),
                    help="GoEmotions-style TSV of the texts (default: %(default)s)")
    ap.add_argument("--limit", type=int, default=1200, help="dev texts for the in-memory runs")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of the in-memory runs (default: 3)")
    ap.add_argument("--cache", type=Path, default=Path(".cache/bench"),
                    help="where the benchmark's models and run logs go (default: %(default)s)")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"), help="results (default: %(default)s)")
    ap.add_argument("--worker-messages", type=int, default=3000, help="the worker's backlog (default: 3000)")
    ap.add_argument("--skip-worker", action="store_true", help="only the in-memory runs of the full benchmark")
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra worker settings, e.g. EMOTION_WORKER_BATCHING__CONCURRENT_BATCHES=1")
    ap.add_argument("--only-worker", action="store_true", help="just the worker runs (with --worker-env)")
    ap.add_argument("--worker-model", choices=list(WORKER_MODELS), action="append",
                    help="the worker runs' model (repeat for several, run one after the other): the bge-small-shaped "
                         "int8 one (the default), or the default (fine-tuned) model, fp32 or int8 (model.precision "
                         "int8: its int8 embedder and thresholds)")
    ap.add_argument("--skip-plain", action="store_true", help="no plain-worker runs beside the worker's")
    ap.add_argument("--skip-p99-bound", action="store_true",
                    help="no search for the highest load that keeps p99 under 100 ms (2 more runs a step)")
    ap.add_argument("--load-seconds", type=float, default=10.0,
                    help="each latency run's length (the trickle's: 20 s, or this when under 10: a smoke run)")
    ap.add_argument("--only-in-memory", action="store_true",
                    help="just the interleaved in-memory runs, with the shipped models beside the bge-small shape")
    ap.add_argument("--only-delivery-modes", action="store_true",
                    help="just at_least_once vs exactly_once on the default model (fp32; --worker-model default-int8: "
                         "int8), --worker-messages, --worker-env: benchmarks/delivery_modes.py")
    args = ap.parse_args(argv)
    worker_env = dict(item.split("=", 1) for item in args.worker_env)
    if args.only_delivery_modes:
        from benchmarks.delivery_modes import main as delivery_modes
        from worker.model_choice import DEFAULT_HEAD_DIR, DEFAULT_HEAD_INT8_DIR

        int8 = args.worker_model == "default-int8"
        embedder = Path("models/emotion-minilm-int8-onnx" if int8 else "models/emotion-minilm-onnx")
        head = DEFAULT_HEAD_INT8_DIR if int8 else DEFAULT_HEAD_DIR
        return delivery_modes(["--data", str(args.data), "--messages", str(args.worker_messages),
                               "--embedder", str(embedder), "--head", str(head),
                               "--out", str(args.out / "delivery_modes.json"),
                               *(f"--worker-env={kv}" for kv in args.worker_env)])
    if args.only_worker:
        texts = read_split(args.data, check_rows=False).texts
        runs: dict[str, Any] = {}
        for name in args.worker_model or ["bge-shape-int8"]:
            model, head = worker_model(name, args.cache)
            print(f"== worker runs: {name}", flush=True)
            runs[name] = worker_runs(model, head, texts, args.worker_messages, worker_env, not args.skip_plain,
                                     args.cache / "run", args.load_seconds, not args.skip_p99_bound)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "worker.json").write_text(json.dumps(runs, indent=2) + "\n")
        from benchmarks.report import worker_plot, worker_table

        (args.out / "worker-table.md").write_text(worker_table(runs) + "\n")
        worker_plot(runs, args.out / "worker.png")
        print(json.dumps(runs, indent=2))
        print(worker_table(runs))
        return 0

    models = prepare_models(args.cache)
    all_texts = read_split(args.data, check_rows=False).texts
    texts = all_texts[: args.limit]
    runners: dict[str, Runner] = {"naive_fp32": naive_runner(models["fp32"], models["head"])}
    runners["engine_fp32"], engine_fp32 = engine_runner(models["fp32"], models["head"])
    runners["engine_int8"], engine_int8 = engine_runner(models["int8"], models["head"])
    peer = peer_runner(models["fp32"], models["head"], args.cache)
    if peer is not None:
        runners["peer_st_onnx_fp32"] = peer
    if args.only_in_memory:  # the 6-layer MiniLM models, fine-tuned (the default) and frozen, where built
        from worker.model_choice import DEFAULT_HEAD_DIR

        for name, embedder, head in (("default_fp32", Path("models/emotion-minilm-onnx"), DEFAULT_HEAD_DIR),
                                     ("default_int8", Path("models/emotion-minilm-int8-onnx"), DEFAULT_HEAD_DIR),
                                     ("frozen_minilm_fp32", Path("models/all-MiniLM-L6-v2-onnx"), FROZEN_HEAD_DIR)):
            if (embedder / "model.onnx").is_file():
                runners[f"engine_{name}"] = engine_runner(embedder, head)[0]
    print(f"in-memory: {len(texts)} texts x {args.rounds} rounds: {', '.join(runners)}", flush=True)
    results: dict[str, Any] = {
        "machine": {"cpus": __import__("os").cpu_count(), "processor": platform.processor(),
                    "onnxruntime": ort.__version__},
        "texts": len(texts),
        "mean_tokens": float(np.mean([len(ids) for ids in engine_fp32.embedder.tokenize(texts).ids])),
        "in_memory": interleaved(runners, texts, args.rounds),
        "single_text_ms": {"fp32": single_text_latency(engine_fp32, texts[:100]),
                           "int8": single_text_latency(engine_int8, texts[:100])},
    }
    mem = results["in_memory"]
    base = mem["naive_fp32"]["texts_per_s"]
    results["ratios"] = {f"{k}_vs_naive": v["texts_per_s"] / base for k, v in mem.items()}
    if "peer_st_onnx_fp32" in mem:
        peer_tps = mem["peer_st_onnx_fp32"]["texts_per_s"]
        results["ratios"]["engine_fp32_vs_peer"] = mem["engine_fp32"]["texts_per_s"] / peer_tps
        results["ratios"]["engine_int8_vs_peer"] = mem["engine_int8"]["texts_per_s"] / peer_tps
    print(json.dumps(results["in_memory"], indent=1), flush=True)
    if args.only_in_memory:
        print(json.dumps(results["ratios"], indent=1))
        return 0
    results["head_call"] = head_share(engine_fp32, texts)
    del runners, engine_fp32, engine_int8, peer
    print("engine steps, one at a time (int8)", flush=True)
    results["steps_int8"] = step_gains(models["int8"], models["head"], texts, args.rounds)
    results["cache"] = cache_effect(models["fp32"], models["head"], texts)
    results["quality_offline_model"] = quality(args.data.parent)
    if not args.skip_worker:
        results["worker"] = worker_runs(models["int8"], models["head"], all_texts, args.worker_messages, worker_env,
                                        not args.skip_plain, args.cache / "run")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    from benchmarks.report import plot, table

    plot(results, args.out / "throughput.png")
    (args.out / "table.md").write_text(table(results) + "\n")
    print(table(results))
    return 0


if __name__ == "__main__":
    from benchmarks.entry import run as run_script

    run_script(main)
