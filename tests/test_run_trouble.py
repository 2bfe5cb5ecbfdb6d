"""Trouble while `emotion-worker run` runs, said once and plainly: brokers that cannot be reached
(one line, then one summary a window, then one line when they answer again; /readyz red meanwhile),
a metrics port already in use (one line, exit 2, before the model loads), the settings in use (one
line at start), and settings a SIGHUP cannot apply (one warning naming them)."""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest
from confluent_kafka import KafkaError

from testkit.cli import run_cli
from worker.config import Settings
from worker.devtools.broker import free_port
from worker.observe.logs import RepeatFilter
from worker.observe.reachability import BrokerStory, ClientReport, failure_reason
from worker.reload import needing_restart

EMOTION_WORKER = Path(sys.executable).parent / "emotion-worker"
REFUSED = ("[thrd:127.0.0.1:1/bootstrap]: 127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: "
           "Connection refused (after 0ms in state CONNECT)")


def http_status(url: str) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(url, timeout=3) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, orjson.loads(e.read())


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def root_logging() -> Iterator[None]:
    """In-process runs of the CLI set up logging on the root logger: put it back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_broker_down_is_told_once_readyz_stays_red_and_sighup_names_what_needs_a_restart(
        tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    """The user's view, from another directory: brokers down, the worker runs on, says so once."""
    closed = free_port()  # nothing listens there
    config = tmp_path / "worker.yaml"
    config.write_text("observe:\n  host: 127.0.0.1\n  port: 0\nmodel:\n  threads: 2\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOTION_WORKER_")}
    env.update({"EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{closed}",
                "EMOTION_WORKER_MODEL__EMBEDDER": str(tiny_encoder),
                "EMOTION_WORKER_MODEL__HEAD": str(tiny_head),
                "EMOTION_WORKER_KAFKA__COMMON": '{"sasl.password": "hunter2-secret"}',
                "PYTHONUNBUFFERED": "1"})
    log_path = tmp_path / "worker.log"
    with log_path.open("wb") as out:
        proc = subprocess.Popen([str(EMOTION_WORKER), "run", "--config", str(config)], cwd=tmp_path, env=env,
                                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def log() -> str:
            return log_path.read_text(errors="replace")

        wait_for(lambda: "cannot reach brokers" in log() or proc.poll() is not None, 60, "cannot reach brokers")
        first_told = time.monotonic()
        port_match = re.search(r"metrics and health on http://127\.0\.0\.1:(\d+)", log())
        assert port_match, log()
        status, body = http_status(f"http://127.0.0.1:{port_match.group(1)}/readyz")
        assert status == 503 and body["brokers_reachable"] is False, body

        # A config edit and SIGHUP: the port and threads need a restart, the threshold reloads.
        config.write_text("observe:\n  host: 127.0.0.1\n  port: 9200\nmodel:\n  threads: 4\n  threshold: 0.3\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "thresholds reloaded" in log(), 20, "the threshold reload")
        # librdkafka retries every ~50-100 ms: a few seconds are enough to show a flood.
        time.sleep(max(0.0, first_told + 3.0 - time.monotonic()))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    text = log()
    lines = text.splitlines()
    assert "Traceback" not in text
    reach = [line for line in lines if "cannot reach brokers" in line]
    assert len(reach) == 1, text
    assert reach[0].endswith(f"cannot reach brokers 127.0.0.1:{closed} (connection refused); retrying")
    assert not [line for line in lines if "Connection refused" in line or "brokers are down" in line], text
    assert len(lines) < 15, text  # before: ~25 lines a second

    start = next(line for line in lines if "starting with config" in line)
    assert (f"starting with config {config}; brokers 127.0.0.1:{closed} from env "
            "EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS; ") in start
    assert "topics chat-messages -> chat-emotions (dead letters chat-messages-dlq); group emotion-worker" in start
    assert (f"model {tiny_encoder} + {tiny_head}: embedder {tiny_encoder} from env EMOTION_WORKER_MODEL__EMBEDDER, "
            f"head {tiny_head} from env EMOTION_WORKER_MODEL__HEAD; thresholds ") in start
    assert f"({tiny_head / 'thresholds.json'})" in start
    assert "kafka properties common.sasl.password=***" in start
    assert "hunter2" not in text

    restart = [line for line in lines if "need a restart" in line]
    assert len(restart) == 1 and restart[0].endswith(
        "SIGHUP: these changed settings need a restart and were not applied: model.threads (2 -> 4), "
        "observe.port (0 -> 9200)"), text
    assert "thresholds reloaded" in text and "all labels" not in restart[0]


def test_metrics_port_in_use_is_one_line_and_exit_2_before_the_model_loads(tmp_path: Path,
                                                                            root_logging: None) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("run", cwd=tmp_path, env={
            "EMOTION_WORKER_OBSERVE__HOST": "127.0.0.1", "EMOTION_WORKER_OBSERVE__PORT": str(port),
            # a model that does not exist: had it been loaded first, this would be the error
            "EMOTION_WORKER_MODEL__EMBEDDER": str(tmp_path / "none"), "EMOTION_WORKER_MODEL__HEAD": str(tmp_path)})
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: observe.port {port} is in use (another worker on this host?): set observe.port "
        "(EMOTION_WORKER_OBSERVE__PORT) to a free port, or 0 for any")


@pytest.mark.parametrize(("host", "problem"), [("192.0.2.1", "is not an address of this host"),
                                              ("nohost.invalid", "cannot be resolved")])
def test_metrics_host_not_of_this_machine_is_one_line(host: str, problem: str, tmp_path: Path,
                                                      root_logging: None) -> None:
    result = run_cli("run", cwd=tmp_path, env={"EMOTION_WORKER_OBSERVE__HOST": host,
                                                "EMOTION_WORKER_OBSERVE__PORT": "0"})
    assert result.returncode == 2
    line = result.stderr.strip()
    assert "\n" not in line and line.startswith(f"error: observe.host {host!r} {problem} (")
    assert line.endswith("set observe.host (EMOTION_WORKER_OBSERVE__HOST) to an address of this host, or 0.0.0.0 "
                         "for all")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def stats(*states: str) -> str:
    return orjson.dumps({"brokers": {f"b{i}": {"state": s} for i, s in enumerate(states)}}).decode()


def test_one_story_for_both_clients_a_summary_a_window_and_the_recovery(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    story = BrokerStory("127.0.0.1:1", summary_every_s=30, clock=clock)
    consumer, producer = ClientReport(story, "consumer"), ClientReport(story, "producer")
    refused = KafkaError(KafkaError._TRANSPORT, REFUSED.split("]: ", 1)[1])
    all_down = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")
    caplog.set_level(logging.DEBUG)

    def told() -> list[str]:
        return [r.getMessage() for r in caplog.records]

    for client in (consumer, producer):
        client.error(refused)
        client.error(all_down)
        for _ in range(5):
            client.log(logging.ERROR, "%s [%s] %s", "FAIL", f"rdkafka#{client.client}-1", REFUSED)
    assert told() == ["cannot reach brokers 127.0.0.1:1 (connection refused); retrying"]
    assert not story.reachable()
    consumer.stats(stats("INIT", "DOWN"))  # still none up
    clock.now += 29
    consumer.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", REFUSED)
    assert len(told()) == 1
    clock.now += 2  # 31 s: the summary, with the attempts of both clients (each seen by log and error)
    consumer.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", REFUSED)
    assert told()[1] == ("still cannot reach brokers 127.0.0.1:1 after 31 s (connection refused; 12 failed "
                         "connection attempts in the last 31 s); retrying")
    clock.now += 11
    producer.stats(stats("INIT", "UP"))
    assert told()[2] == "brokers 127.0.0.1:1 reachable again after 42 s" and story.reachable()
    # Up: another broker's failure is the client's own line again (collapsed by the log's filter).
    consumer.log(logging.ERROR, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", REFUSED)
    assert caplog.records[-1].name == "worker.kafka.librdkafka" and len(told()) == 4
    producer.error(all_down)
    assert told()[-1] == "cannot reach brokers 127.0.0.1:1 (connection refused); retrying"


def test_librdkafka_errors_collapse_at_every_level_the_workers_own_errors_do_not() -> None:
    f = RepeatFilter(window_s=60)

    def record(name: str, level: int, msg: str) -> logging.LogRecord:
        return logging.LogRecord(name, level, __file__, 1, msg, None, None)

    kafka = [f.filter(record("worker.kafka.librdkafka", logging.ERROR, "FAIL [rdkafka#consumer-1] x"))
             for _ in range(5)]
    assert kafka == [True, False, False, False, False]
    own = [f.filter(record("worker.reload", logging.ERROR, "threshold reload refused")) for _ in range(3)]
    assert own == [True, True, True]
    summary = record("worker.brokers", logging.WARNING, "still cannot reach brokers")
    summary.collapsed = True
    assert f.filter(summary) and f.filter(summary)


@pytest.mark.parametrize(("text", "reason"), [
    ("127.0.0.1:1/bootstrap: Connect to ipv4#127.0.0.1:1 failed: Connection refused "
     "(after 0ms in state CONNECT, 4 identical error(s) suppressed)", "connection refused"),
    ("nohost:9092/bootstrap: Failed to resolve 'nohost:9092': Name or service not known (after 3ms in state "
     "CONNECT)", "failed to resolve 'nohost:9092': Name or service not known"),
    ("kafka:9092/1: Disconnected (after 5012ms in state UP)", "disconnected"),
    ("GroupCoordinator: 127.0.0.1:9092: Connect to ipv4#127.0.0.1:9092 failed: Connection refused (after 0ms in "
     "state CONNECT)", "connection refused"),
    ("[thrd:GroupCoordinator]: GroupCoordinator: kafka:9092: Disconnected: connection closed by peer: receive 0 "
     "after POLLIN (after 14964ms in state UP)", "disconnected: connection closed by peer: receive 0 after POLLIN"),
    ("kafka:9093/bootstrap: SSL handshake failed: unexpected eof (after 3ms in state SSL_HANDSHAKE)",
     "SSL handshake failed: unexpected eof"),
])
def test_failure_reason_is_librdkafkas_cause_without_names_and_timings(text: str, reason: str) -> None:
    assert failure_reason(text) == reason


def test_restart_needed_settings_named_in_order_secrets_masked_thresholds_left_out() -> None:
    running = Settings()
    new = running.model_copy(update={
        "kafka": running.kafka.model_copy(update={"common": {"sasl.password": "new-secret"}}),
        "model": running.model.model_copy(update={"threads": 4, "threshold": 0.3, "label_thresholds": {"joy": 0.2}}),
        "observe": running.observe.model_copy(update={"port": 9200}),
    })
    assert needing_restart(running, new) == [
        "kafka.common.sasl.password (*** -> ***)", "model.threads (2 -> 4)", "observe.port (9108 -> 9200)"]
    assert needing_restart(running, running) == []
