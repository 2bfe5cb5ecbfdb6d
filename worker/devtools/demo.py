"""`emotion-worker demo`: a real local broker, the real worker on a real model, a producer of
sample chat lines (and a few broken messages, to show dead letters), and the results live, shown by
`emotion-worker tail`'s code (following the output and dead-letter topics)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

from worker.config import Settings, with_origin
from worker.devtools.broker import LocalBroker
from worker.devtools.samples import input_producer_conf, produce_samples
from worker.ops.signals import stop_on_signals
from worker.ops.tail import Tail, TailOptions, reader_conf
from worker.settings_sources import Origin


def _printer(prefix: str, lock: threading.Lock) -> Callable[[str], None]:
    def write(line: str) -> None:
        with lock:
            print(f"{prefix}{line}", flush=True)
    return write


def _viewers(settings: Settings, texts: dict[str, str], stop: threading.Event) -> list[threading.Thread]:
    """`tail --follow --from-beginning` on the results (with each message's text) and on the dead letters."""
    k = settings.kafka
    conf, lock = reader_conf(k), threading.Lock()
    results = Tail(conf, TailOptions(k.output_topic, from_beginning=True, follow=True), _printer("  ", lock), texts)
    dead = Tail(conf, TailOptions(k.dead_letter_topic, dead_letters=True, from_beginning=True, follow=True),
                _printer("  dead letter  ", lock))
    return [threading.Thread(target=t.run, args=(stop,), daemon=True, name=f"demo-tail-{t.options.topic}")
            for t in (results, dead)]


def run_demo(settings: Settings, *, seconds: float, rate: float) -> int:
    from worker.app import run_worker

    log_dir = Path(".cache")
    log_dir.mkdir(exist_ok=True)
    with LocalBroker(log_path=log_dir / "demo-broker.log") as broker:
        k = settings.kafka
        broker.create_topics([k.input_topic], partitions=3)
        broker.create_topics([k.output_topic, k.dead_letter_topic], partitions=3)
        # The startup line names these as the demo's, not the settings file's.
        settings = with_origin(settings, Origin("demo", "(its local broker)"),
                               kafka={"bootstrap_servers": broker.bootstrap, "output_bootstrap_servers": None,
                                      "session_timeout_ms": 6000},
                               observe={"port": 0})
        print(f"local broker on {broker.bootstrap}; topics {k.input_topic} -> {k.output_topic} "
              f"(dead letters: {k.dead_letter_topic})", flush=True)
        worker_stop = threading.Event()
        texts: dict[str, str] = {}
        with stop_on_signals() as stop:
            producer = threading.Thread(
                target=produce_samples, args=(input_producer_conf(settings.kafka), k.input_topic),
                kwargs={"rate": rate, "stop": stop, "texts": texts}, daemon=True, name="demo-producer")
            result: dict[str, int] = {}
            worker = threading.Thread(
                target=lambda: result.setdefault("rc", run_worker(settings, stop_event=worker_stop,
                                                                    install_signals=False)),
                daemon=True, name="demo-worker")
            viewer_stop = threading.Event()
            viewers = _viewers(settings, texts, viewer_stop)
            worker.start()
            for t in (producer, *viewers):
                t.start()
            deadline = time.monotonic() + seconds if seconds > 0 else float("inf")
            while not stop.is_set() and time.monotonic() < deadline and worker.is_alive():
                stop.wait(0.2)
            stop.set()
            producer.join(timeout=10)
            time.sleep(1.0)  # let the worker finish and the viewers print the last results
            worker_stop.set()
            worker.join(timeout=settings.shutdown_timeout_s + 5)
            viewer_stop.set()
            for t in viewers:
                t.join(timeout=5)
    return result.get("rc", 1)
