"""The benchmark's table (Markdown) and plot (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.worker_e2e import BOUND_RUNS, P99_BOUND_MS

LABELS = {
    "naive_fp32": "naive baseline (ORT, batches of 32, arrival order), fp32",
    "engine_fp32": "engine, fp32",
    "engine_int8": "engine, int8",
    "peer_st_onnx_fp32": "sentence-transformers ONNX backend, fp32",
}


def table(r: dict[str, Any]) -> str:
    mem = r["in_memory"]
    base = mem["naive_fp32"]["texts_per_s"]
    lines = [f"In memory: {r['texts']} GoEmotions dev texts (mean {r['mean_tokens']:.1f} tokens), bge-small-en-shaped "
             f"model, {r['machine']['cpus']} CPUs, onnxruntime {r['machine']['onnxruntime']}, median of "
             f"{next(iter(mem.values()))['rounds']} interleaved rounds.", "",
             "| contender | texts/s | vs naive |", "| --- | ---: | ---: |"]
    for name, v in mem.items():
        lines.append(f"| {LABELS.get(name, name)} | {v['texts_per_s']:.1f} | {v['texts_per_s'] / base:.2f}x |")
    ratios = r.get("ratios", {})
    if "engine_fp32_vs_peer" in ratios:
        lines.append("")
        lines.append(f"Engine vs sentence-transformers: fp32 {ratios['engine_fp32_vs_peer']:.2f}x, "
                     f"int8 {ratios['engine_int8_vs_peer']:.2f}x.")
    s = r["single_text_ms"]
    lines.append(f"Single text, alone: fp32 p50 {s['fp32']['p50']:.1f} ms, int8 p50 {s['int8']['p50']:.1f} ms.")
    h = r.get("head_call")
    if h:
        lines.append(f"Separate head session: {h['head_ms']:.2f} ms per call of 16 texts against "
                     f"{h['encoder_ms']:.1f} ms for the encoder ({h['head_share'] * 100:.2f}% of the time).")
    c = r.get("cache")
    if c:
        lines.append(f"Recent-text cache on a stream with {c['repeat_share'] * 100:.0f}% common short lines: "
                     f"{c['cache']:.1f} vs {c['no_cache']:.1f} texts/s without ({c['gain']:.2f}x).")
    q = r.get("quality_offline_model")
    if q:
        lines.append(f"Offline model on dev ({q['rows']} texts): macro F1 fp32 {q['macro_f1_fp32']:.4f}, int8 "
                     f"{q['macro_f1_int8']:.4f}; label sets identical on {q['label_set_agreement'] * 100:.1f}%.")
    steps = r.get("steps_int8")
    if steps:
        lines += ["", "What each engine step gained (int8, the same texts cut into micro-batches in arrival order):",
                  "",
                  "| step | 16-text micro-batches | vs before | 128-text micro-batches | vs before |",
                  "| --- | ---: | ---: | ---: | ---: |"]
        small, large = steps["micro_batches_of_16"], steps["micro_batches_of_128"]
        first = next(iter(small))
        for name in small:
            lines.append(f"| {name} | {small[name]['texts_per_s']:.1f}/s | "
                         f"{small[name]['texts_per_s'] / small[first]['texts_per_s']:.2f}x | "
                         f"{large[name]['texts_per_s']:.1f}/s | "
                         f"{large[name]['texts_per_s'] / large[first]['texts_per_s']:.2f}x |")
    w = r.get("worker")
    if w:
        lines += ["", worker_rows(w, "worker through a real broker (int8)")]
    return "\n".join(lines)


LOAD_ROWS = (("load_50", "50% load"), ("load_50_again", "50% load, again"), ("load_80", "80% load"),
             ("trickle", "trickle"))


def worker_rows(w: dict[str, Any], title: str) -> str:
    """One model's worker runs as a table: backlog against the engine and the plain worker, the
    end-to-end latency at each load, peak RSS."""
    b = w["backlog"]
    lines = [f"| {title} | value |", "| --- | ---: |",
             f"| backlog of {w['messages']} messages | {b['texts_per_s']:.1f} msg/s "
             f"({b['vs_engine_in_memory']:.2f}x the engine in memory on the same texts, "
             f"{b['engine_in_memory_texts_per_s']:.1f}/s) |"]
    plain = w.get("plain_worker")
    if plain:
        lines.append(f"| the plain worker's backlog (benchmarks/plain_worker.py) | {plain['texts_per_s']:.1f} msg/s "
                     f"(this worker: {b['vs_plain_worker']:.2f}x) |")
    for key, name in LOAD_ROWS:
        v = w.get(key)
        if v and v.get("n"):
            lines.append(f"| {name} ({v['rate_per_s']:.1f} msg/s) end-to-end p50 / p95 / p99 | "
                         f"{v['p50_ms']:.0f} / {v['p95_ms']:.0f} / {v['p99_ms']:.0f} ms |")
    bound = w.get("p99_bound")
    if bound:
        tried = "; ".join(f"{t['fraction_of_backlog']:.0%}: "
                          + ", ".join("incomplete" if p is None else f"{p:.0f}" for p in t["p99_ms"])
                          for t in bound["tried"])
        found = ("below the lowest step" if bound["fraction_of_backlog"] is None else
                 f"up to {bound['rate_per_s']:.1f} msg/s ({bound['fraction_of_backlog']:.0%} of the backlog rate)")
        lines.append(f"| p99 under {P99_BOUND_MS:.0f} ms in {BOUND_RUNS} runs out of {BOUND_RUNS} | {found}; "
                     f"p99 (ms) by load: {tried} |")
    pl = (plain or {}).get("load_50")
    if pl and pl.get("n"):
        lines.append(f"| the plain worker at 50% of its rate ({pl['rate_per_s']:.1f} msg/s) p50 / p95 / p99 | "
                     f"{pl['p50_ms']:.0f} / {pl['p95_ms']:.0f} / {pl['p99_ms']:.0f} ms |")
    lines.append(f"| worker peak RSS | {w['peak_rss_mb']:.0f} MB |")
    return "\n".join(lines)


WORKER_TITLES = {"bge-shape-int8": "bge-small-en shape, int8", "default": "default model, fp32",
                 "default-int8": "default model, int8"}


def worker_table(runs: dict[str, dict[str, Any]]) -> str:
    """`bench --only-worker`'s runs, one table per model (end-to-end latency: input record
    timestamp to output record timestamp)."""
    return "\n\n".join(worker_rows(w, f"worker, {WORKER_TITLES.get(name, name)}") for name, w in runs.items())


def worker_plot(runs: dict[str, dict[str, Any]], path: Path) -> None:
    """Two panels: backlog msg/s, and p99 at 50% load, for each model: the plain worker against
    this worker (the engine in memory as a tick on the first)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(runs)
    titles = [WORKER_TITLES.get(n, n) for n in names]
    x = list(range(len(names)))
    width = 0.38
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4.2))
    plain = [runs[n].get("plain_worker", {}).get("texts_per_s", 0.0) for n in names]
    ours = [runs[n]["backlog"]["texts_per_s"] for n in names]
    engine = [runs[n]["backlog"]["engine_in_memory_texts_per_s"] for n in names]
    bars = left.bar([i - width / 2 for i in x], plain, width, label="plain worker", color="#c44e52")
    left.bar_label(bars, fmt="%.0f")
    bars = left.bar([i + width / 2 for i in x], ours, width, label="emotion-worker", color="#4c72b0")
    left.bar_label(bars, fmt="%.0f")
    left.scatter([i + width / 2 for i in x], engine, marker="_", s=900, color="black", zorder=3,
                 label="engine in memory, same texts")
    left.set_ylim(0, max([*plain, *ours, *engine]) * 1.35)
    left.set_xticks(x, titles)
    left.set_ylabel("messages per second")
    left.set_title("backlog drain (higher is better)")
    left.legend(loc="upper left", fontsize=8)
    plain_p99 = [runs[n].get("plain_worker", {}).get("load_50", {}).get("p99_ms", 0.0) for n in names]
    ours_p99 = [max(runs[n].get(k, {}).get("p99_ms", 0.0) for k in ("load_50", "load_50_again")) for n in names]
    ours_80 = [runs[n].get("load_80", {}).get("p99_ms", 0.0) for n in names]
    third = width * 2 / 3
    for offset, values, label, color in ((-third, plain_p99, "plain worker, 50% of its rate", "#c44e52"),
                                         (0.0, ours_p99, "emotion-worker, 50% (worse of 2 runs)", "#4c72b0"),
                                         (third, ours_80, "emotion-worker, 80%", "#8fa8d8")):
        bars = right.bar([i + offset for i in x], values, third, label=label, color=color)
        right.bar_label(bars, fmt="%.0f")
    for i, n in enumerate(names):  # the sizing search's answer, under each model's bars
        rate = (runs[n].get("p99_bound") or {}).get("rate_per_s")
        if rate:
            right.text(i, 12, f"p99 < {P99_BOUND_MS:.0f} ms up to\n{rate:.0f} msg/s", ha="center", fontsize=8,
                       color="white")
    right.axhline(100, color="#4c72b0", linestyle="--", linewidth=1)
    right.axhline(300, color="#8fa8d8", linestyle=":", linewidth=1)
    right.set_yscale("log")
    right.set_ylim(10, max([*plain_p99, *ours_p99, *ours_80, 300]) * 6)
    right.set_xticks(x, titles)
    right.set_ylabel("end-to-end p99, ms (log scale)")
    right.set_title("tail latency under load (lower is better;\ntargets: 100 ms at 50%, 300 ms at 80%)")
    right.legend(loc="upper left", fontsize=8)
    fig.suptitle("Worker through a real broker, 2 CPU cores, unique GoEmotions texts")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mem = r["in_memory"]
    names = list(mem)
    values = [mem[n]["texts_per_s"] for n in names]
    if r.get("worker"):
        names.append("worker_int8_e2e")
        values.append(r["worker"]["backlog"]["texts_per_s"])
    fig, ax = plt.subplots(figsize=(8, 3.8))
    bars = ax.barh([LABELS.get(n, "worker end-to-end (broker), int8") for n in names], values, color="#4c72b0")
    ax.bar_label(bars, fmt="%.0f")
    ax.set_xlabel("texts per second (2 CPU cores, bge-small-en shape)")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
