"""Where the worker's time goes while it drains a backlog: a py-spy flame graph and a per-step summary.

    python -m benchmarks.profile_worker --worker-model default-int8 --messages 8000 --out benchmarks/results

A local broker, a backlog of unique GoEmotions dev texts, the worker as a real process on the
chosen model (default-int8: model.precision int8's embedder and thresholds). From the worker's first
output to its last, py-spy samples every thread (`--threads`, idle time excluded, so a sample is a
thread on a core) and the CPU time of every OS thread of the worker and of the broker is read from
/proc. Written to --out: `profile-<model>-backlog.svg` (the flame graph), `.txt` (py-spy's raw
collapsed stacks) and `.json` (the summary: samples per step, CPU seconds per thread kind and for
the broker). The summary puts each sample in the step of its innermost worker frame: the model
call, tokenizing, decode, result JSON, ordered release, offset tracking, produce, delivery
callbacks, metrics, polling, micro-batch queue; it also prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import orjson

from benchmarks.plain_e2e import unique_texts
from benchmarks.worker_e2e import OutputReader, steady_load
from testkit.kafka import Topics, produce, start_worker
from worker.devtools.broker import LocalBroker
from worker.train.dataset import read_split

# The step a sample belongs to: the first rule (in this order) with a frame of the stack whose file
# and function (qualified name, searched) match. A stack that ends in a wait (lock, condition,
# queue, future) is "waiting": py-spy's idle test misses some of those.
STEPS: list[tuple[str, str, str]] = [
    ("model call (onnxruntime)", r"onnxruntime/capi", r"\brun$"),
    ("model call (onnxruntime)", r"worker/engine/engine\.py", r"_score$"),
    ("tokenize", r"worker/engine/embedder\.py", r"tokenize$"),
    ("metrics (prometheus_client)", r"prometheus_client", r""),
    ("result JSON (records)", r"worker/stream/records\.py|worker/engine/result\.py", r""),
    ("result objects (engine: thresholds, Result)", r"worker/engine/(engine|thresholds)\.py", r"_result|passed"),
    ("length sort and padding", r"worker/engine/batching\.py", r""),
    ("decode (JSON in)", r"worker/stream/decode\.py", r""),
    ("offset tracking", r"worker/stream/(offsets|commits)\.py", r""),
    ("delivery callbacks", r"worker/stream/(publish|outputs)\.py", r"delivered|__call__"),
    ("produce", r"worker/stream/publish\.py", r"send$"),
    ("ordered release", r"worker/stream/release\.py", r""),
    ("outputs (publish step)", r"worker/stream/outputs\.py", r""),
    ("publisher poll (librdkafka delivery reports)", r"worker/stream/publish\.py", r"_serve_once$"),
    ("envelopes (consume -> submit)", r"worker/stream/(consumer_loop|processing)\.py", r"_take$|submit$"),
    ("consumer poll (librdkafka)", r"worker/stream/consumer_loop\.py", r"run_once$"),
    ("micro-batch queue", r"worker/stream/microbatch\.py", r""),
    ("inference bookkeeping", r"worker/stream/inference\.py", r""),
    ("futures (model threads hand-off)", r"concurrent/futures", r""),
]
_WAITS = re.compile(r"\b(wait|acquire|get|select|sleep)$")
_FRAME = re.compile(r"^(?P<func>.+) \((?P<file>[^()]+?)(?::\d+)?\)$")


def step_of(frames: list[str]) -> str:
    parsed = [m.groupdict() for f in reversed(frames) if (m := _FRAME.match(f.strip())) is not None]
    if parsed and _WAITS.search(parsed[0]["func"]) and re.search(r"threading|queue|selectors|_base", parsed[0]["file"]):
        return "waiting (locks, queues, futures; missed by py-spy's idle test)"
    for step, file, func in STEPS:
        filere, funcre = re.compile(file), re.compile(func)
        if any(filere.search(fr["file"]) and funcre.search(fr["func"]) for fr in parsed):
            return step
    return "other"


def summarise(raw: Path) -> dict[str, Any]:
    """Samples per step and per thread from py-spy's raw output (`thread;frame;... count`)."""
    steps: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = stack.split(";")
        threads[re.sub(r"^thread \(\d+\): ", "", frames[0])] += count
        steps[step_of(frames)] += count
        total += count
    return {"samples": total,
            "steps": {k: {"samples": v, "share": v / total} for k, v in steps.most_common()},
            "threads": dict(threads.most_common())}


def cpu_by_thread(pid: int) -> dict[int, tuple[str, float]]:
    """Per OS thread of a process: its name and CPU seconds (user + system) so far."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[str, float]] = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        out[int(task.name)] = (stat[stat.index("(") + 1: stat.rindex(")")], (int(fields[11]) + int(fields[12])) / tick)
    return out


def cpu_spent(before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]],
              python_names: dict[int, str]) -> dict[str, float]:
    """CPU seconds between two readings, per thread: Python threads by their name (from py-spy),
    others (librdkafka's, onnxruntime's) by their OS name with the digits dropped."""
    spent: dict[str, float] = {}
    for tid, (name, cpu) in after.items():
        label = python_names.get(tid) or re.sub(r"\d+$", "", name)
        spent[label] = spent.get(label, 0.0) + cpu - before.get(tid, (name, 0.0))[1]
    return {k: round(v, 2) for k, v in sorted(spent.items(), key=lambda kv: -kv[1]) if v > 0.005}


def python_threads(raw: Path) -> dict[int, str]:
    """OS thread id -> Python thread name, from py-spy's raw output (`thread (TID): NAME;...`)."""
    found = re.findall(r"^thread \((\d+)\): ([^;]+);", raw.read_text(), flags=re.M)
    return {int(tid): name for tid, name in found}


def model_paths(name: str) -> tuple[Path, Path]:
    from worker.model_choice import DEFAULT_HEAD_DIR, DEFAULT_HEAD_INT8_DIR

    if name == "default-int8":
        return Path("models/emotion-minilm-int8-onnx"), DEFAULT_HEAD_INT8_DIR
    return Path("models/emotion-minilm-onnx"), DEFAULT_HEAD_DIR


def profile(model: Path, head: Path, texts: list[str], out: Path, tag: str, rate: int,
            worker_env: dict[str, str], load: float | None = None) -> dict[str, Any]:
    """A backlog of `texts` (or, with `load`, the texts sent at that many a second) under py-spy."""
    spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    work = Path(".cache/bench/profile")
    work.mkdir(parents=True, exist_ok=True)
    n = len(texts)
    svg, raw = out / f"{_name(tag, load)}.svg", out / f"{_name(tag, load)}.txt"
    with LocalBroker(log_path=work / "broker.log") as broker:
        topics = Topics.fresh(broker, partitions=3)
        reader = OutputReader(broker.bootstrap, topics.output)
        reader.start()
        env = {"EMOTION_WORKER_MODEL__CACHE_SIZE": "0", "EMOTION_WORKER_OBSERVE__LOG_LEVEL": "WARNING",
               **worker_env}
        worker = start_worker(broker, topics, model, head, work / "worker.log", **env)
        assert worker.proc is not None and broker.proc is not None
        try:
            # Joined and warm: one message through, before the backlog is written.
            produce(broker.bootstrap, topics.input, [(b"w", orjson.dumps({"id": "warm", "text": "warm up"}), [])])
            assert reader.wait_for(1, timeout=120, worker=worker), "the worker did not start"
            if load is None:
                produce(broker.bootstrap, topics.input,
                        [(str(i).encode(), orjson.dumps({"id": f"b{i}", "text": t}), []) for i, t in enumerate(texts)])
            cpu0, broker0, t0 = cpu_by_thread(worker.proc.pid), cpu_by_thread(broker.proc.pid), time.monotonic()
            results = {}
            for fmt, path in (("raw", raw), ("flamegraph", svg)):
                spy_proc = subprocess.Popen([spy, "record", "--pid", str(worker.proc.pid), "--threads", "--rate",
                                             str(rate), "--nonblocking", "--format", fmt, "--output", str(path)],
                                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                results[fmt] = spy_proc
            if load is not None:
                steady_load(broker.bootstrap, topics.input, texts, load, n / load, "b")
            reader.wait_for(n + 1, timeout=600, worker=worker)
            cpu1, broker1, wall = cpu_by_thread(worker.proc.pid), cpu_by_thread(broker.proc.pid), time.monotonic() - t0
            for spy_proc in results.values():
                spy_proc.send_signal(signal.SIGINT)
            for spy_proc in results.values():
                _, err = spy_proc.communicate(timeout=60)
                if spy_proc.returncode not in (0, -signal.SIGINT):
                    print(err.decode(errors="replace"), file=sys.stderr)
            stamps = sorted(reader.stamps[1:n + 1])
        finally:
            reader.stop.set()
            worker.stop()
    summary = summarise(raw)
    worker_cpu = cpu_spent(cpu0, cpu1, python_threads(raw))
    summary.update({
        "model": str(model), "messages": n, "seconds": round(wall, 2), "offered_msg_per_s": load or "backlog",
        "msg_per_s_while_profiled": (n - 1) / ((stamps[-1] - stamps[0]) / 1000),
        "worker_cpu_s_by_thread": worker_cpu, "worker_cpu_s": round(sum(worker_cpu.values()), 2),
        "cpu_us_per_message_by_thread": {k: round(v / n * 1e6) for k, v in worker_cpu.items()},
        "cpu_us_per_message_outside_model_threads": round(
            sum(v for k, v in worker_cpu.items() if not k.startswith("model_")) / n * 1e6),
        "broker_cpu_us_per_message": round(sum(cpu_spent(broker0, broker1, {}).values()) / n * 1e6),
        "py_spy": {"rate_hz": rate, "nonblocking": True, "idle": False},
    })
    return summary


def _name(tag: str, load: float | None) -> str:
    return f"profile-{tag}-backlog" if load is None else f"profile-{tag}-load-{load:g}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/go_emotions/dev.tsv"))
    ap.add_argument("--worker-model", choices=["default", "default-int8"], default="default-int8")
    ap.add_argument("--messages", type=int, default=8000)
    ap.add_argument("--rate", type=int, default=200, help="py-spy samples per second")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--load", type=float, help="instead of a backlog, send the messages at this many a second")
    args = ap.parse_args(argv)
    model, head = model_paths(args.worker_model)
    texts = unique_texts(read_split(args.data, check_rows=False).texts, args.messages)
    args.out.mkdir(parents=True, exist_ok=True)
    tag = args.worker_model.replace("default-", "")
    summary = profile(model, head, texts, args.out, tag, args.rate, dict(e.split("=", 1) for e in args.worker_env),
                      args.load)
    (args.out / f"{_name(tag, args.load)}.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    from benchmarks.entry import run as run_script

    run_script(main)
