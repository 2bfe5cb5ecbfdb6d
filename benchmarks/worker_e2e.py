"""The whole worker through a real local broker: backlog throughput, latency under load, peak RSS."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, Producer

from testkit.kafka import Topics, WorkerProcess, produce, start_worker
from worker.devtools.broker import LocalBroker


def _vm_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class OutputReader(threading.Thread):
    """Reads the output topic continuously; records receive time and the output document, and each
    output's own timestamp (ms, set when the worker produced it)."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}",
                                  "auto.offset.reset": "earliest", "fetch.wait.max.ms": 5,
                                  "session.timeout.ms": 6000})
        self.consumer.subscribe([topic])
        self.records: list[tuple[float, dict[str, Any]]] = []
        self.stamps: list[int] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            first = self.consumer.poll(0.05)  # returns on arrival, unlike consume(n, timeout)
            if first is None:
                continue
            for m in [first, *self.consumer.consume(1000, timeout=0)]:
                if m.error() is None:
                    self.records.append((time.time(), orjson.loads(m.value() or b"{}")))
                    self.stamps.append(m.timestamp()[1])
        self.consumer.close()

    def wait_for(self, n: int, timeout: float, worker: WorkerProcess | None = None) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.records) < n and time.monotonic() < deadline:
            if worker is not None and worker.proc is not None and worker.proc.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.proc.returncode}); see {worker.log_path}")
            time.sleep(0.05)
        return len(self.records) >= n


def steady_load(bootstrap: str, topic: str, texts: list[str], rate: float, seconds: float, tag: str) -> int:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    n = int(rate * seconds)
    start = time.monotonic()
    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        p.produce(topic, value=orjson.dumps({"id": f"{tag}{i}", "text": texts[i % len(texts)]}), key=str(i).encode())
        p.poll(0)
    p.flush(10)
    return n


def latencies(records: list[tuple[float, dict[str, Any]]], prefix: str) -> dict[str, float]:
    import numpy as np

    lat = [(t - doc["source"]["timestamp"] / 1000) * 1000 for t, doc in records if str(doc["id"]).startswith(prefix)]
    proc = [doc["processing_ms"] for _, doc in records if str(doc["id"]).startswith(prefix)]
    if not lat:
        return {"n": 0}
    a = np.asarray(lat)
    return {"n": len(lat), "p50_ms": float(np.percentile(a, 50)), "p95_ms": float(np.percentile(a, 95)),
            "p99_ms": float(np.percentile(a, 99)), "processing_p50_ms": float(np.median(proc))}


def engine_throughput(model: Path, head: Path, texts: list[str]) -> float:
    """The engine in memory on exactly the backlog's texts, in one call (one global length sort)."""
    from worker.engine.engine import Engine, EngineOptions

    engine = Engine(EngineOptions(embedder=str(model), head=str(head), cache_size=0))
    engine.probabilities(texts[:64])
    t0 = time.perf_counter()
    engine.probabilities(texts)
    return len(texts) / (time.perf_counter() - t0)


def run_worker_benchmarks(model: Path, head: Path, texts: list[str], n: int, **worker_env: str) -> dict[str, Any]:
    out: dict[str, Any] = {"model": str(model), "messages": n, "worker_env": worker_env}
    # The machine drifts: the engine is measured right before and right after the backlog run.
    engine_before = engine_throughput(model, head, texts[:n])
    tmp = Path(".cache/bench/run")
    tmp.mkdir(parents=True, exist_ok=True)
    with LocalBroker(log_path=tmp / "broker.log") as broker:
        topics = Topics.fresh(broker, partitions=3)
        backlog = texts[:n]
        produce(broker.bootstrap, topics.input,
                [(str(i).encode(), orjson.dumps({"id": f"b{i}", "text": t}), []) for i, t in enumerate(backlog)])
        reader = OutputReader(broker.bootstrap, topics.output)
        reader.start()
        env = {"EMOTION_WORKER_MODEL__CACHE_SIZE": "0", "EMOTION_WORKER_OBSERVE__LOG_LEVEL": "WARNING", **worker_env}
        worker = start_worker(broker, topics, model, head, tmp / "worker.log", **env)
        try:
            assert reader.wait_for(n, timeout=600, worker=worker), "backlog not processed"
            stamps = sorted(reader.stamps[:n])
            first_ts = min(doc["source"]["timestamp"] for _, doc in reader.records[:n])
            # From the first output to the last, by the outputs' own timestamps: the steady backlog rate
            # (receive times would flatter it when the reader's group join ends after the worker began).
            steady = (n - 1) / ((stamps[-1] - stamps[0]) / 1000)
            engine_tps = (engine_before + engine_throughput(model, head, texts[:n])) / 2
            out["backlog"] = {"texts_per_s": steady, "vs_engine_in_memory": steady / engine_tps,
                              "engine_in_memory_texts_per_s": engine_tps, "first_input_ts": first_ts,
                              "engine_before_after": [engine_before, 2 * engine_tps - engine_before]}
            print(f"worker backlog: {steady:.1f} texts/s ({steady / engine_tps:.2f}x engine)", flush=True)
            half = steady / 2
            fresh = texts[n:] or texts
            sent = steady_load(broker.bootstrap, topics.input, fresh, half, 20.0, "h")
            reader.wait_for(n + sent, timeout=60)
            out["half_load"] = {"rate_per_s": half, **latencies(reader.records, "h")}
            print(f"half load: {out['half_load']}", flush=True)
            trickle = steady_load(broker.bootstrap, topics.input, fresh[::-1], 3.0, 10.0, "t")
            reader.wait_for(n + sent + trickle, timeout=30)
            out["trickle"] = {"rate_per_s": 3.0, **latencies(reader.records, "t")}
            print(f"trickle: {out['trickle']}", flush=True)
            assert worker.proc is not None
            out["peak_rss_mb"] = _vm_hwm_mb(worker.proc.pid)
        finally:
            reader.stop.set()
            worker.stop()
    return out
