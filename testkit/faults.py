"""Helpers for the fault-injection suites: HTTP probes of a running worker, a background chat
stream, accounting of lost and duplicated messages, and the scenario report."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Message, Producer

from testkit.kafka import TopicReader, Topics, WorkerProcess
from worker.devtools.broker import LocalBroker


def http_json(url: str) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())
    except OSError:
        return 0, {}


def metric(worker: WorkerProcess, name: str) -> float:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/metrics", timeout=3) as r:
            text = r.read().decode()
    except OSError:
        return float("nan")
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


class StreamProducer(threading.Thread):
    """Produces `n` chat messages with ids s0..s{n-1} at `rate` per second, in the background."""

    def __init__(self, bootstrap: str, topic: str, n: int, rate: float, prefix: str = "s") -> None:
        super().__init__(daemon=True)
        self.bootstrap, self.topic, self.n, self.rate, self.prefix = bootstrap, topic, n, rate, prefix
        self.sent = 0

    def run(self) -> None:
        p = Producer({"bootstrap.servers": self.bootstrap, "linger.ms": 5, "enable.idempotence": True,
                      "message.timeout.ms": 120_000})
        start = time.monotonic()
        for i in range(self.n):
            ahead = start + i / self.rate - time.monotonic()
            if ahead > 0:
                time.sleep(ahead)
            while True:
                try:
                    p.produce(self.topic, key=f"room{i % 11}".encode(),
                              value=orjson.dumps({"id": f"{self.prefix}{i}", "text": f"chat line {i}, thanks!"}))
                    break
                except BufferError:
                    p.poll(0.05)
            p.poll(0)
            self.sent += 1
        assert p.flush(120) == 0


def _ids(messages: list[Message]) -> Counter[str]:
    return Counter(str(orjson.loads(m.value() or b"{}").get("id")) for m in messages)


def account(broker: LocalBroker, topics: Topics, ids: set[str], timeout: float) -> dict[str, int]:
    """Read outputs and dead letters until every id is seen (or timeout), then until nothing new
    comes for 2 s (late duplicates): lost and duplicates."""
    missing = set(ids)

    def all_seen(batch: list[Message]) -> bool:
        missing.difference_update(_ids([m for m in batch if m.topic() == topics.output]))
        return not missing

    with TopicReader(broker.bootstrap, topics.output, topics.dlq) as reader:
        reader.until(all_seen, timeout)
        reader.drain(idle=2.0)
    seen, dlq = _ids(reader.messages[topics.output]), reader.messages[topics.dlq]
    return {"sent": len(ids), "outputs": sum(seen.values()), "dead_letters": len(dlq),
            "lost": len(ids - set(seen)), "duplicates": sum(seen.values()) - len(set(seen) & ids)}


def write_fault_report(rows: list[dict[str, Any]], path: Path) -> None:
    """The scenario table, as JSON at `path` and as a Markdown table beside it (.md)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(orjson.dumps(rows, option=orjson.OPT_INDENT_2).decode())
    lines = ["| scenario | sent | outputs | dead letters | lost | duplicates | seconds | notes |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['scenario']} | {r['sent']} | {r['outputs']} | {r['dead_letters']} | {r['lost']} | "
                     f"{r['duplicates']} | {r['seconds']:.0f} | {r.get('notes', '')} |")
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
