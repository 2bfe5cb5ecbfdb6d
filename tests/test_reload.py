"""Thresholds reloaded on SIGHUP by a running worker, against a real broker: later outputs carry the
new hash and labels, no output mixes old and new thresholds, an invalid file changes nothing."""

from __future__ import annotations

import json
import signal
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Producer

from testkit.kafka import Topics, WorkerProcess, read_all, start_worker
from testkit.models import build_random_head
from testkit.wait import wait_until
from worker.devtools.broker import LocalBroker
from worker.engine.thresholds import Thresholds
from worker.labels import LABELS

from .conftest import TINY


def metric(worker: WorkerProcess, line_start: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=3) as r:
        lines = [line for line in r.read().decode().splitlines() if line.startswith(line_start)]
    return float(lines[0].rsplit(" ", 1)[1]) if lines else float("nan")


def wait_for_log(worker: WorkerProcess, text: str, timeout: float = 30) -> None:
    assert wait_until(lambda: text in worker.log(), timeout, interval=0.02), \
        f"{text!r} never logged:\n{worker.log()[-2000:]}"


class Stream(threading.Thread):
    def __init__(self, bootstrap: str, topic: str, n: int, rate: float, first_id: int = 0) -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.n, self.rate, self.first_id = bootstrap, topic, n, rate, first_id
        self.sent = 0

    def run(self) -> None:
        p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 2})
        start = time.monotonic()
        for i in range(self.n):
            time.sleep(max(0.0, start + i / self.rate - time.monotonic()))
            text = f"line {i % 60}: " + "wow " * (i % 7)  # repeated texts: results come from the cache too
            p.produce(self.topic, key=f"r{i % 5}".encode(), value=orjson.dumps({"id": self.first_id + i, "text": text}))
            p.poll(0)
            self.sent += 1
        p.flush(30)


def test_sighup_switches_thresholds_between_batches(broker: LocalBroker, tiny_encoder: Path, tmp_path: Path) -> None:
    head = tmp_path / "head"
    build_random_head(head, TINY["hidden"], seed=1, threshold=0.5)
    old = dict.fromkeys(LABELS, 0.5)
    new = {label: (0.3 if j % 2 else 0.7) for j, label in enumerate(LABELS)}
    by_hash = {Thresholds(old).digest(): old, Thresholds(new).digest(): new}
    old_hash, new_hash = Thresholds(old).digest(), Thresholds(new).digest()

    topics = Topics.fresh(broker, partitions=2)
    worker = start_worker(broker, topics, tiny_encoder, head, tmp_path / "w.log")
    n = 1200
    stream = Stream(broker.bootstrap, topics.input, n, rate=400)
    try:
        wait_for_log(worker, "assigned", timeout=60)
        stream.start()
        wait_until(lambda: stream.sent >= n // 3, 30, interval=0.01)
        (head / "thresholds.json").write_text(json.dumps(new))
        worker.signal(signal.SIGHUP)
        wait_for_log(worker, "thresholds reloaded")
        sent_after_reload = stream.sent
        stream.join(60)
        outputs = read_all(broker.bootstrap, topics.output, expect=n, timeout=90)
        assert len(outputs) == n

        # An invalid file is refused: nothing changes, one failure counted.
        (head / "thresholds.json").write_text(json.dumps({**new, "joy": 1.5}))
        worker.signal(signal.SIGHUP)
        wait_for_log(worker, "threshold reload refused")
        assert metric(worker, 'emotion_worker_threshold_reloads_total{result="failed"}') == 1
        assert metric(worker, 'emotion_worker_threshold_reloads_total{result="ok"}') == 1
        assert f'thresholds_hash="{new_hash}"' in urllib.request.urlopen(
            f"http://127.0.0.1:{worker.port}/metrics", timeout=3).read().decode()
        tail = Stream(broker.bootstrap, topics.input, 50, rate=500, first_id=n)
        tail.start()
        tail.join(30)
        later = read_all(broker.bootstrap, topics.output, expect=n + 50, timeout=60)
    finally:
        assert worker.stop() == 0

    hashes = {"old": 0, "new": 0}
    for m in outputs:
        doc = orjson.loads(m.value())
        used = doc["model"]["thresholds_hash"]
        assert used in by_hash, used
        thresholds = by_hash[used]
        expected = {label for label, p in doc["scores"].items() if np.float32(p) >= np.float32(thresholds[label])}
        assert set(doc["labels"]) == expected, f"output {doc['id']} mixes thresholds"
        hashes["old" if used == old_hash else "new"] += 1
        if doc["id"] >= sent_after_reload:
            assert used == new_hash, f"output {doc['id']}, consumed after the reload, has the old thresholds"
    assert hashes["old"] > 0 and hashes["new"] > 0, hashes
    after_refusal = [orjson.loads(m.value()) for m in later]
    after_refusal = [doc for doc in after_refusal if doc["id"] >= n]
    assert len(after_refusal) == 50 and {doc["model"]["thresholds_hash"] for doc in after_refusal} == {new_hash}


def test_watched_files_reload_with_config_overrides_and_refuse_invalid_ones(tiny_encoder: Path,
                                                                           tmp_path: Path) -> None:
    from worker.engine.engine import Engine, EngineOptions
    from worker.observe.metrics import Metrics
    from worker.reload import ThresholdReloader

    head = tmp_path / "head"
    build_random_head(head, TINY["hidden"], seed=2)
    engine = Engine(EngineOptions(embedder=str(tiny_encoder), head=str(head)))
    metrics = Metrics()
    config = tmp_path / "worker.yaml"
    config.write_text("model:\n  label_thresholds: {joy: 0.9}\n")
    stop = threading.Event()
    ThresholdReloader(engine, metrics, config).watch(0.05, stop)

    def wait(condition: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not condition():
            assert time.monotonic() < deadline
            time.sleep(0.02)

    try:
        before = engine.thresholds.digest()
        (head / "thresholds.json").write_text(json.dumps(dict.fromkeys(LABELS, 0.25)))
        wait(lambda: engine.thresholds.digest() != before)
        assert engine.thresholds.values["joy"] == 0.9 and engine.thresholds.values["anger"] == 0.25
        result = engine.classify(["what a day"])[0]
        assert result.thresholds_hash == engine.identity.thresholds_hash == engine.thresholds.digest()
        assert set(result.labels) == {label for label, p in result.scores.items()
                                      if np.float32(p) >= np.float32(0.9 if label == "joy" else 0.25)}

        current = engine.thresholds.digest()
        config.write_text("model:\n  label_thresholds: {joyful: 0.9}\n")  # an unknown label
        wait(lambda: metrics.threshold_reloads.labels(result="failed")._value.get() == 1)
        config.write_text("model:\n  label_thresholds: {joy: 0.9}\n")  # valid again: same thresholds
        wait(lambda: metrics.threshold_reloads.labels(result="ok")._value.get() == 2)
        (head / "thresholds.json").write_text(json.dumps(dict.fromkeys(LABELS[:-1], 0.3)))  # a label missing
        wait(lambda: metrics.threshold_reloads.labels(result="failed")._value.get() == 2)
        assert engine.thresholds.digest() == current
    finally:
        stop.set()
