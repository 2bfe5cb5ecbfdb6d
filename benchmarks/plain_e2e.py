"""The plain worker (benchmarks/plain_worker.py) through a real local broker with a backlog: its rate
from its first output to its last, on the same texts as the worker's run. The outputs' own
timestamps (set when the plain worker produced them) time it, not when a reader received them: a
reader's group join can end after a fast run has finished. And the texts: every one unique, so that
no result cache flatters either side. And a steady load (`plain_load`, on a fresh broker as the
worker's loads are), with its end-to-end latency measured as the worker's is (output record
timestamp minus input's)."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import orjson

from benchmarks.worker_e2e import WARM_MESSAGES, OutputReader, run_load
from testkit.kafka import ROOT, SESSION_TIMEOUT_MS, Topics, produce, read_all
from worker.devtools.broker import LocalBroker


def unique_texts(texts: list[str], count: int) -> list[str]:
    """`count` texts, each different: the split's texts in turn, each with its number appended
    (a few tokens more than the original)."""
    if not texts:
        raise ValueError("no texts")
    return [f"{texts[i % len(texts)]} ({i})" for i in range(count)]


def _start_plain(model: Path, head: Path, broker: LocalBroker, topics: Topics,
                 log: IO[bytes]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.plain_worker", "--bootstrap", broker.bootstrap, "--input",
         topics.input, "--output", topics.output, "--group", topics.group, "--embedder", str(model),
         "--head", str(head), "--session-timeout-ms", str(SESSION_TIMEOUT_MS)],
        cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


def _wait(reader: OutputReader, n: int, proc: subprocess.Popen[bytes], timeout: float, log: IO[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while len(reader.records) < n:
        if proc.poll() is not None or time.monotonic() > deadline:
            how = "timed out" if proc.returncode is None else f"exited {proc.returncode}"
            raise RuntimeError(f"the plain worker wrote {len(reader.records)} of {n} results and {how}; see {log.name}")
        time.sleep(0.05)


def plain_backlog(model: Path, head: Path, texts: list[str], work: Path, timeout: float = 600.0) -> dict[str, Any]:
    """Backlog throughput of the plain worker on `texts` (3 partitions, a fresh local broker)."""
    work.mkdir(parents=True, exist_ok=True)
    n = len(texts)
    with LocalBroker(log_path=work / "plain-broker.log") as broker:
        topics = Topics.fresh(broker, partitions=3)
        produce(broker.bootstrap, topics.input,
                [(str(i).encode(), orjson.dumps({"id": f"p{i}", "text": t}), []) for i, t in enumerate(texts)])
        reader = OutputReader(broker.bootstrap, topics.output)
        reader.start()
        log = (work / "plain-worker.log").open("ab")
        proc = _start_plain(model, head, broker, topics, log)
        try:
            _wait(reader, n, proc, timeout, log)
            stamps = sorted(m.timestamp()[1] for m in read_all(broker.bootstrap, topics.output, expect=n))
        finally:
            reader.stop.set()
            _stop(proc)
            log.close()
    if len(stamps) < n or stamps[-1] <= stamps[0]:
        raise RuntimeError(f"the plain worker's {len(stamps)} outputs do not time a run of {n}")
    return {"messages": n, "texts_per_s": (n - 1) / ((stamps[-1] - stamps[0]) / 1000)}


def plain_load(model: Path, head: Path, texts: list[str], rate: float, seconds: float, work: Path) -> dict[str, Any]:
    """The plain worker at a steady `rate` for `seconds`, as the worker's loads run: a fresh broker
    and process, WARM_MESSAGES of `texts` as a burst first, then the load on the rest; its latency."""
    work.mkdir(parents=True, exist_ok=True)
    with LocalBroker(log_path=work / "plain-load-broker.log") as broker:
        topics = Topics.fresh(broker, partitions=3)
        reader = OutputReader(broker.bootstrap, topics.output)
        reader.start()
        log = (work / "plain-load-worker.log").open("ab")
        proc = _start_plain(model, head, broker, topics, log)
        try:
            warm = texts[:WARM_MESSAGES]
            produce(broker.bootstrap, topics.input,
                    [(str(i).encode(), orjson.dumps({"id": f"warm{i}", "text": t}), []) for i, t in enumerate(warm)])
            _wait(reader, len(warm), proc, 120, log)
            return run_load(broker.bootstrap, topics.input, reader, texts[len(warm):] or texts, rate, seconds,
                            "plain-load-")
        finally:
            reader.stop.set()
            _stop(proc)
            log.close()
