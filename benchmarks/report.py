"""The benchmark's table (Markdown) and plot (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
        b = w["backlog"]
        lines += ["", "| worker through a real broker (int8) | value |", "| --- | ---: |",
                  f"| backlog of {w['messages']} messages | {b['texts_per_s']:.1f} texts/s "
                  f"({b['vs_engine_in_memory']:.2f}x the engine in memory on the same texts, "
                  f"{b['engine_in_memory_texts_per_s']:.1f}/s) |"]
        for key, name in (("half_load", "half load"), ("trickle", "trickle")):
            v = w[key]
            if v.get("n"):
                lines.append(f"| {name} ({v['rate_per_s']:.1f} msg/s) end-to-end p50 / p95 / p99 | "
                             f"{v['p50_ms']:.0f} / {v['p95_ms']:.0f} / {v['p99_ms']:.0f} ms |")
        t = w["trickle"]
        if t.get("n"):
            added = t["processing_p50_ms"] - s["int8"]["p50"]
            lines.append(f"| trickle: consume-to-produce p50 minus single-text inference p50 (batching delay) | "
                         f"{added:.1f} ms |")
        lines.append(f"| worker peak RSS | {w['peak_rss_mb']:.0f} MB |")
    return "\n".join(lines)


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
