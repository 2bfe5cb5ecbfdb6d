"""`emotion-worker demo`: a real local broker, the real worker on a real model, a producer of
sample chat lines (and a few broken messages, to show dead letters), and live results."""

from __future__ import annotations

import logging
import random
import signal
import threading
import time
from importlib import resources
from pathlib import Path
from types import FrameType

import orjson
from confluent_kafka import Consumer, Producer

from worker.config import Settings
from worker.devtools.broker import LocalBroker

log = logging.getLogger(__name__)

BROKEN = [b"not json at all", b'{"id": "x", "text": ""}', b'["a list"]', b'{"id": "y", "text": 42}', b"\xff\xfe"]


def sample_lines() -> list[str]:
    text = resources.files("worker").joinpath("data/sample_chat.txt").read_text(encoding="utf-8")
    return [line for line in text.splitlines() if line.strip()]


def produce_samples(bootstrap: str, topic: str, rate: float, stop: threading.Event,
                    texts: dict[str, str] | None = None) -> None:
    """Sample chat lines at `rate` per second until stopped; every 25th message is broken on purpose.
    `texts`, when given, records id -> text for the demo's viewer."""
    lines = sample_lines()
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    rng = random.Random(7)
    n = 0
    while not stop.is_set():
        n += 1
        if n % 25 == 0:
            value = rng.choice(BROKEN)
        else:
            text = rng.choice(lines)
            msg_id = f"m{n}"
            if texts is not None:
                texts[msg_id] = text
            value = orjson.dumps({"id": msg_id, "text": text, "user": f"user{rng.randint(1, 9)}"})
        producer.produce(topic, value=value, key=f"room{n % 3}".encode())
        producer.poll(0)
        stop.wait(1.0 / rate)
    producer.flush(5)


def print_results(settings: Settings, stop: threading.Event, texts: dict[str, str]) -> None:
    k = settings.kafka
    consumer = Consumer({"bootstrap.servers": k.bootstrap_servers, "group.id": "emotion-demo-viewer",
                         "auto.offset.reset": "earliest", "session.timeout.ms": 6000})
    consumer.subscribe([k.output_topic, k.dead_letter_topic])
    while not stop.is_set():
        msg = consumer.poll(0.2)
        if msg is None or msg.error():
            continue
        if msg.topic() == k.dead_letter_topic:
            headers = dict(msg.headers() or [])
            raw = headers.get("emotion-worker.error.class") or b"?"
            reason = raw.decode() if isinstance(raw, bytes) else str(raw)
            print(f"  dead letter  {reason:<16} {(msg.value() or b'')[:40]!r}", flush=True)
            continue
        doc = orjson.loads(msg.value() or b"{}")
        labels = ", ".join(f"{lab} {doc['scores'][lab]:.2f}" for lab in doc["labels"]) or "(no label)"
        text = texts.get(str(doc["id"]), "?")
        print(f"  {text[:52]:<52} -> {labels}  [{doc['processing_ms']:.0f} ms]", flush=True)
    consumer.close()


def run_demo(settings: Settings, *, seconds: float, rate: float) -> int:
    from worker.app import run_worker

    log_dir = Path(".cache")
    log_dir.mkdir(exist_ok=True)
    with LocalBroker(log_path=log_dir / "demo-broker.log") as broker:
        k = settings.kafka
        broker.create_topics([k.input_topic], partitions=3)
        broker.create_topics([k.output_topic, k.dead_letter_topic], partitions=3)
        settings = settings.model_copy(update={
            "kafka": k.model_copy(update={"bootstrap_servers": broker.bootstrap, "session_timeout_ms": 6000}),
            "observe": settings.observe.model_copy(update={"port": 0}),
        })
        print(f"local broker on {broker.bootstrap}; topics {k.input_topic} -> {k.output_topic} "
              f"(dead letters: {k.dead_letter_topic})", flush=True)
        stop = threading.Event()
        worker_stop = threading.Event()
        texts: dict[str, str] = {}

        def on_signal(_signum: int, _frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        threads = [
            threading.Thread(target=produce_samples, args=(broker.bootstrap, k.input_topic, rate, stop, texts),
                             daemon=True),
            threading.Thread(target=print_results, args=(settings, stop, texts), daemon=True),
        ]
        result: dict[str, int] = {}
        worker = threading.Thread(
            target=lambda: result.setdefault("rc", run_worker(settings, stop_event=worker_stop,
                                                                install_signals=False)),
            daemon=True)
        worker.start()
        for t in threads:
            t.start()
        deadline = time.monotonic() + seconds if seconds > 0 else float("inf")
        while not stop.is_set() and time.monotonic() < deadline and worker.is_alive():
            time.sleep(0.2)
        stop.set()
        time.sleep(1.0)  # let the viewer print the last results
        worker_stop.set()
        worker.join(timeout=settings.shutdown_timeout_s + 5)
        for t in threads:
            t.join(timeout=5)
    return result.get("rc", 1)
