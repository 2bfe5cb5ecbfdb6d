"""Fault injection against a real broker, the cluster side: crashes (kill -9), rebalance storms,
the broker stopped and restarted empty, the output cluster down while input flows. Each scenario
adds sent / outputs / dead letters / lost / duplicates / seconds to the fault report (see README,
"Reliability"); the worker's own edges are in test_faults_edges.py.

Short by default (CI); FAULT_SUITE=long runs the longer version. Every scenario is bounded in
time and stops by itself.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from testkit.faults import StreamProducer, account, http_json, metric
from testkit.kafka import Topics, committed, produce, read_all, start_worker
from testkit.wait import wait_until
from worker.devtools.broker import LocalBroker

LONG = os.environ.get("FAULT_SUITE") == "long"
pytestmark = pytest.mark.faults



def test_crash_kill9_restart(broker: LocalBroker, tiny_encoder: Path, tiny_head: Path, tmp_path: Path,
                             report: list[dict[str, Any]]) -> None:
    n, crashes, in_flight = (100_000, 10, 500) if LONG else (20_000, 5, 500)
    rate, commit_ms = 1200.0, 1000
    topics = Topics.fresh(broker, partitions=4)
    started = time.monotonic()
    stream = StreamProducer(broker.bootstrap, topics.input, n, rate)
    worker = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "w.log",
                          EMOTION_WORKER_BATCHING__MAX_IN_FLIGHT=str(in_flight),
                          EMOTION_WORKER_KAFKA__COMMIT_INTERVAL_MS=str(commit_ms))
    stream.start()
    rng = random.Random(11)
    stream_seconds = n / rate
    redo_bound, committed_before = 0.0, 0
    for _ in range(crashes):
        # Kill only a worker that is busy: consuming and publishing, with work in flight.
        wait_until(lambda: metric(worker, "emotion_worker_messages_published_total") > 0, 60)
        time.sleep(rng.uniform(0.1, 1.5))
        # What the next worker may redo: what this one acknowledged but its commits did not cover,
        # its in-flight window, one poll batch, and what it published between this reading and the
        # kill. Measured, not the input rate x the commit interval: a restarted worker drains the
        # backlog its restart left at its own speed, far above the input rate.
        committed_now = sum(max(0, off) for off in committed(broker.bootstrap, topics.group, topics.input, 4).values())
        published = metric(worker, "emotion_worker_messages_published_total")
        worker.signal(signal.SIGKILL)
        redo_bound += published - (committed_now - committed_before) + in_flight + 500 + 200
        committed_before = committed_now
        worker.wait(10)
        worker.start()
    assert committed_before > 0, "no offset was committed between the crashes"
    stream.join(timeout=stream_seconds * 3)
    result = account(broker, topics, {f"s{i}" for i in range(n)}, timeout=240)
    assert worker.stop() == 0
    result.update(scenario=f"kill -9 x{crashes} during stream", seconds=time.monotonic() - started,
                  notes=f"in-flight limit {in_flight}, commit every {commit_ms} ms, {rate:.0f} msg/s")
    report.append(result)
    assert result["lost"] == 0, result
    # Redone after a crash: at most what was consumed but not committed: the in-flight window, one
    # poll batch, and what was acknowledged since the last commit, per crash.
    assert result["duplicates"] <= redo_bound, (result, redo_bound)


@pytest.mark.parametrize("strategy", ["cooperative-sticky", "range"])
def test_rebalance_storm(broker: LocalBroker, tiny_encoder: Path, tiny_head: Path, tmp_path: Path,
                         report: list[dict[str, Any]], strategy: str) -> None:
    n = 120_000 if LONG else 30_000
    rate = 1000.0
    topics = Topics.fresh(broker, partitions=6)
    started = time.monotonic()
    stream = StreamProducer(broker.bootstrap, topics.input, n, rate)
    workers = [start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / f"w{i}.log",
                            EMOTION_WORKER_KAFKA__ASSIGNMENT_STRATEGY=strategy) for i in range(3)]
    # Tansu's group coordinator was seen to stall for minutes (no member assigned anything) when
    # members left and joined while a rebalance was still under way; so the group forms before the
    # storm starts, and re-forms after each leave/join.
    wait_until(lambda: all(w.assignments() for w in workers), 60)
    stream.start()
    rng = random.Random(5)
    events = 0
    while stream.is_alive():
        time.sleep(rng.uniform(1.5, 3.0))
        victim = rng.choice(workers)
        how = rng.choice([signal.SIGTERM, signal.SIGKILL])
        victim.signal(how)
        victim.wait(30)
        time.sleep(rng.uniform(0.2, 1.0))
        joined_before = victim.assignments()
        victim.start()
        events += 1
        # Let the group re-form before the next event (see the note above about Tansu).
        victim.wait_assigned(30, more_than=joined_before)
    result = account(broker, topics, {f"s{i}" for i in range(n)}, timeout=240)
    for w in workers:
        assert w.stop() == 0
    assert all(rc in (0, -9) for w in workers for rc in w.exit_codes), [w.exit_codes for w in workers]
    result.update(scenario=f"3 workers, leave/join storm (SIGTERM + kill -9), {strategy}",
                  seconds=time.monotonic() - started,
                  notes=f"{events} leave/join events")
    report.append(result)
    assert result["lost"] == 0, result


def test_broker_outage_and_restart(tiny_encoder: Path, tiny_head: Path, tmp_path: Path,
                                   report: list[dict[str, Any]]) -> None:
    """Memory-only broker: restart it (same port), re-create the topics; the worker must not crash,
    must not commit past what it published, and must process what arrives after."""
    broker = LocalBroker(log_path=tmp_path / "b.log").start()
    started = time.monotonic()
    try:
        topics = Topics.fresh(broker, partitions=2)
        worker = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "w.log")
        produce(broker.bootstrap, topics.input,
                [(b"k", orjson.dumps({"id": f"a{i}", "text": "before"}), []) for i in range(500)])
        assert len(read_all(broker.bootstrap, topics.output, expect=500, timeout=60)) == 500
        broker.stop()
        time.sleep(5)  # outage: the worker keeps running, retrying
        assert worker.proc is not None and worker.proc.poll() is None, "worker crashed during the outage"
        broker.start()
        broker.create_topics([topics.input], partitions=2)
        broker.create_topics([topics.output, topics.dlq], partitions=2)
        n = 800
        produce(broker.bootstrap, topics.input,
                [(f"k{i}".encode(), orjson.dumps({"id": f"b{i}", "text": "after"}), []) for i in range(n)])
        result = account(broker, topics, {f"b{i}" for i in range(n)}, timeout=120)
        assert worker.proc.poll() is None
        if result["lost"]:
            worker.signal(signal.SIGUSR1)
            time.sleep(1)
        assert worker.stop() == 0
        # Nothing committed past what was published on the new broker.
        offsets = committed(broker.bootstrap, topics.group, topics.input, 2)
        assert sum(max(o, 0) for o in offsets.values()) <= result["outputs"] + result["dead_letters"]
        result.update(scenario="broker stopped 5 s, restarted empty, topics re-created",
                      seconds=time.monotonic() - started, notes="worker stayed up; counted after restart")
        report.append(result)
        assert result["lost"] == 0, result
    finally:
        broker.stop()


def test_output_side_down_then_back(broker: LocalBroker, tiny_encoder: Path, tiny_head: Path, tmp_path: Path,
                                    report: list[dict[str, Any]]) -> None:
    """Results go to a second cluster that fails while input keeps flowing: nothing is committed past
    what was published, /readyz is red, memory stays bounded (partitions pause), and the worker
    recovers without a restart."""
    out_broker = LocalBroker(log_path=tmp_path / "out.log").start()
    started = time.monotonic()
    in_flight = 300
    try:
        topics = Topics.fresh(broker, partitions=2)
        out_broker.create_topics([topics.output, topics.dlq], partitions=2)
        worker = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "w.log",
                              EMOTION_WORKER_KAFKA__OUTPUT_BOOTSTRAP_SERVERS=out_broker.bootstrap,
                              EMOTION_WORKER_KAFKA__PRODUCER='{"message.timeout.ms": "3000"}',
                              EMOTION_WORKER_BATCHING__MAX_IN_FLIGHT=str(in_flight))
        produce(broker.bootstrap, topics.input,
                [(b"k", orjson.dumps({"id": f"a{i}", "text": "one"}), []) for i in range(200)])
        assert len(read_all(out_broker.bootstrap, topics.output, expect=200, timeout=60)) == 200
        wait_until(lambda: sum(max(v, 0) for v in committed(broker.bootstrap, topics.group, topics.input, 2).values())
                   == 200, 10)  # committed every 200 ms
        before = committed(broker.bootstrap, topics.group, topics.input, 2)
        assert sum(max(v, 0) for v in before.values()) == 200
        out_broker.stop()
        n = 3000
        produce(broker.bootstrap, topics.input,
                [(f"k{i}".encode(), orjson.dumps({"id": f"b{i}", "text": "two"}), []) for i in range(n)])
        readyz = f"http://127.0.0.1:{worker.port}/readyz"
        assert wait_until(lambda: http_json(readyz)[0] == 503, 30), "readyz stayed green while the output side was down"
        time.sleep(3)
        assert metric(worker, "emotion_worker_paused_partitions") > 0
        assert metric(worker, "emotion_worker_in_flight_messages") <= in_flight + 500
        assert committed(broker.bootstrap, topics.group, topics.input, 2) == before, "committed past published"
        assert worker.proc is not None and worker.proc.poll() is None
        out_broker.start()
        out_broker.create_topics([topics.output, topics.dlq], partitions=2)
        outs = read_all(out_broker.bootstrap, topics.output, expect=n, timeout=120)
        seen = {orjson.loads(m.value())["id"] for m in outs}
        lost = len({f"b{i}" for i in range(n)} - seen)
        if lost:
            worker.signal(signal.SIGUSR1)
            time.sleep(1)
        assert wait_until(lambda: http_json(readyz)[0] == 200, 30), "did not recover"
        assert worker.stop() == 0
        report.append({"scenario": "output cluster down while input flows, then back", "sent": n,
                       "outputs": len(outs), "dead_letters": 0, "lost": lost, "duplicates": len(outs) - len(seen),
                       "seconds": time.monotonic() - started,
                       "notes": f"readyz red, partitions paused at in-flight {in_flight}, no restart"})
        assert lost == 0
    finally:
        out_broker.stop()
