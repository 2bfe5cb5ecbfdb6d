"""What exactly-once costs: the worker with kafka.delivery at_least_once, then exactly_once, in one
run, on the same broker (noida-db, which implements transactions: worker.devtools.
transactional_broker), the same model and the same unique texts.

    python -m benchmarks.delivery_modes --messages 5000 --out benchmarks/results/delivery_modes.json
    (or: scripts/bench --only-delivery-modes --worker-messages 5000)

For each mode: a backlog of `--messages` texts on 3 partitions (throughput: from the first output
produced to the last one received), then a steady load at `--load-fraction` of at-least-once's
backlog rate, the same rate for both modes (end-to-end latency p50/p95/p99). Outputs are read
with isolation.level=read_committed, as a consumer of exactly-once output must, and timed when the
reader receives them: an exactly-once result becomes visible when its transaction commits (every
kafka.commit_interval_ms), not when it is produced, and that is what a user waits for. A shorter
interval trades latency for more transactions: --worker-env EMOTION_WORKER_KAFKA__COMMIT_INTERVAL_MS=200.
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition

from testkit.faults import metric
from testkit.kafka import Topics, WorkerProcess, produce, start_worker
from worker.devtools.transactional_broker import TransactionalBroker

MODES = ("at_least_once", "exactly_once")
PARTITIONS = 3


class CommittedReader(threading.Thread):
    """Reads the output topic from the beginning with read_committed (partitions assigned: no group
    join), keeping each record's id and the time it arrived."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        super().__init__(daemon=True)
        self.consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"bench-{topic}",
                                  "isolation.level": "read_committed", "enable.auto.commit": False,
                                  "fetch.wait.max.ms": 5})
        self.consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
        self.arrived: list[tuple[float, str]] = []  # (time.time() at receipt, id)
        self.produced_ms: list[int] = []  # each output's own timestamp: when the worker produced it
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            first = self.consumer.poll(0.05)
            if first is None:
                continue
            now = time.time()
            for m in [first, *self.consumer.consume(1000, timeout=0)]:
                if m.error() is None:
                    self.arrived.append((now, str(orjson.loads(m.value() or b"{}").get("id"))))
                    self.produced_ms.append(m.timestamp()[1])
        self.consumer.close()

    def wait_for(self, n: int, timeout: float, worker: WorkerProcess) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.arrived) < n and time.monotonic() < deadline:
            if worker.proc is not None and worker.proc.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.proc.returncode}): {worker.log()[-500:].strip()}")
            time.sleep(0.05)
        return len(self.arrived) >= n


def steady_load(bootstrap: str, topic: str, texts: list[str], rate: float, seconds: float,
                tag: str) -> dict[str, float]:
    """`rate` messages a second for `seconds`; returns id -> send time (s)."""
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
    sent: dict[str, float] = {}
    start = time.monotonic()
    for i in range(max(1, int(rate * seconds))):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        msg_id = f"{tag}{i}"
        sent[msg_id] = time.time()
        value = orjson.dumps({"id": msg_id, "text": texts[i % len(texts)]})
        while True:
            try:
                p.produce(topic, value=value, key=str(i).encode())
                break
            except BufferError:  # the local queue is full: let librdkafka send, then retry
                p.poll(0.05)
        p.poll(0)
    p.flush(10)
    return sent


def latency(sent: dict[str, float], reader: CommittedReader, start: int) -> dict[str, float]:
    lat = [(at - sent[i]) * 1000 for at, i in reader.arrived[start:] if i in sent]
    if not lat:
        return {"n": 0, "sent": len(sent)}
    a = np.asarray(lat)
    return {"n": len(lat), "sent": len(sent), "p50_ms": float(np.percentile(a, 50)),
            "p95_ms": float(np.percentile(a, 95)), "p99_ms": float(np.percentile(a, 99)), "max_ms": float(a.max())}


def run_mode(broker: TransactionalBroker, delivery: str, model: Path, head: Path, backlog: list[str],
             load_texts: list[str], rate: float | None, load_fraction: float, load_seconds: float,
             work: Path, env: dict[str, str]) -> dict[str, Any]:
    """One mode: the backlog, then the load (at `rate`, or `load_fraction` of this backlog's rate)."""
    topics = Topics.fresh(broker, partitions=PARTITIONS)
    produce(broker.bootstrap, topics.input,
            [(str(i).encode(), orjson.dumps({"id": f"b{i}", "text": t}), []) for i, t in enumerate(backlog)])
    reader = CommittedReader(broker.bootstrap, topics.output)
    reader.start()
    worker = start_worker(broker, topics, model, head, work / f"worker-{delivery}.log",
                          EMOTION_WORKER_KAFKA__DELIVERY=delivery, EMOTION_WORKER_MODEL__CACHE_SIZE="0",
                          EMOTION_WORKER_OBSERVE__LOG_LEVEL="WARNING",
                          # noida-db: its least session timeout; eager assignment (no cooperative rebalance there)
                          EMOTION_WORKER_KAFKA__SESSION_TIMEOUT_MS="6000",
                          EMOTION_WORKER_KAFKA__ASSIGNMENT_STRATEGY="range", **env)
    out: dict[str, Any] = {"delivery": delivery}
    try:
        n = len(backlog)
        if not reader.wait_for(n, timeout=600, worker=worker):
            raise RuntimeError(f"{delivery}: {len(reader.arrived)} of {n} results came back; see {worker.log_path}")
        # From the first output produced to the last one visible to the reader: an exactly-once
        # backlog is done for a reader when its last transaction commits.
        first_produced = min(reader.produced_ms[:n]) / 1000
        last_visible = max(at for at, _ in reader.arrived[:n])
        backlog_rate = (n - 1) / max(1e-3, last_visible - first_produced)
        out["backlog"] = {"messages": n, "texts_per_s": backlog_rate}
        print(f"{delivery}: backlog {backlog_rate:.1f} texts/s", flush=True)
        load_rate = rate if rate is not None else load_fraction * backlog_rate
        start = len(reader.arrived)
        sent = steady_load(broker.bootstrap, topics.input, load_texts, load_rate, load_seconds, "load-")
        reader.wait_for(start + len(sent), timeout=30, worker=worker)
        out["load"] = {"rate_per_s": load_rate, "seconds": load_seconds, **latency(sent, reader, start)}
        print(f"{delivery}: load {out['load']}", flush=True)
        out["transactions"] = {r: metric(worker, f'emotion_worker_transactions_total{{result="{r}"}}')
                               for r in ("committed", "aborted")}
    finally:
        reader.stop.set()
        out["exit_status"] = worker.stop()
    return out


def compare(model: Path, head: Path, texts: list[str], messages: int, load_fraction: float, load_seconds: float,
            work: Path, env: dict[str, str] | None = None) -> dict[str, Any]:
    """Both modes on one broker; the load rate is at-least-once's backlog rate times `load_fraction`."""
    work.mkdir(parents=True, exist_ok=True)
    unique = [f"{texts[i % len(texts)]} ({i})" for i in range(messages + 50_000)]  # every text different
    backlog, load_texts = unique[:messages], unique[messages:]
    result: dict[str, Any] = {"model": str(model), "head": str(head), "messages": messages,
                              "load_fraction": load_fraction, "broker": "noida-db (TransactionalBroker)"}
    rate: float | None = None
    with TransactionalBroker(log_path=work / "broker.log") as broker:
        for delivery in MODES:
            result[delivery] = run_mode(broker, delivery, model, head, backlog, load_texts, rate, load_fraction,
                                        load_seconds, work, env or {})
            rate = result[delivery]["load"]["rate_per_s"]
    alo, eos = result["at_least_once"], result["exactly_once"]
    result["exactly_once_vs_at_least_once"] = {
        "backlog_throughput": eos["backlog"]["texts_per_s"] / alo["backlog"]["texts_per_s"],
        "p99_ms": [alo["load"].get("p99_ms"), eos["load"].get("p99_ms")]}
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=Path("../shared/data/go_emotions/dev.tsv"))
    ap.add_argument("--embedder", type=Path, default=Path("models/emotion-minilm-onnx"),
                    help="the model (default: the default embedder built by scripts/setup)")
    ap.add_argument("--head", type=Path, default=None, help="default: the default model's head")
    ap.add_argument("--messages", type=int, default=5000)
    ap.add_argument("--load-fraction", type=float, default=0.5, help="of at-least-once's backlog rate")
    ap.add_argument("--load-seconds", type=float, default=20.0)
    ap.add_argument("--worker-env", action="append", default=[], metavar="KEY=VALUE",
                    help="extra settings for both modes, e.g. EMOTION_WORKER_KAFKA__COMMIT_INTERVAL_MS=500")
    ap.add_argument("--work", type=Path, default=Path(".cache/bench/delivery"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/delivery_modes.json"))
    args = ap.parse_args(argv)
    from worker.train.dataset import read_split

    if args.head is None:
        from worker.model_choice import DEFAULT_HEAD_DIR

        args.head = DEFAULT_HEAD_DIR
    texts = read_split(args.data, check_rows=False).texts
    env = dict(item.split("=", 1) for item in args.worker_env)
    result = compare(args.embedder, args.head, texts, args.messages, args.load_fraction, args.load_seconds,
                     args.work, env)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    from benchmarks.entry import run as run_script

    run_script(main)
