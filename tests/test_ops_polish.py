"""The operations' words: why brokers cannot be reached (refused, timed out, name not resolved, or
librdkafka's words when TCP connects), one default timeout; tail's dead-letter reason cut at a
word, apart from the value; the reload naming the source that changed the thresholds; a missing
input topic told once, /readyz red until it exists, then consumed (a real worker process)."""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import KafkaError, Producer, TopicPartition

from testkit.cli import run_cli
from testkit.kafka import Topics, produce, read_all, start_worker
from testkit.models import build_random_head
from testkit.wait import wait_until
from worker.devtools.broker import LocalBroker
from worker.errors import WorkerError
from worker.labels import LABELS
from worker.observe.health import Health
from worker.ops.brokers import ensure_reachable, split_address, tcp_problem, unreachable_reason
from worker.ops.tail import clip, format_dead_letter
from worker.stream.kafka_conf import TOPIC_REFRESH_MS
from worker.stream.missing_topics import MissingTopics
from worker.stream.records import ERROR_CLASS_HEADER, ERROR_HEADER

from .conftest import TINY

UTF8_REASON = ("'utf-8' codec can't decode byte 0xff in position 0: invalid start byte (the value is not UTF-8 "
               "text: send UTF-8)")


# ---- why the brokers cannot be reached ---------------------------------------------------------


@pytest.fixture
def closed_port() -> int:
    """A loopback port nothing listens on (connect: refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """A port that takes TCP connections and never says a word (not Kafka)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    taken: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                taken.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield int(server.getsockname()[1])
    finally:
        stop.set()
        thread.join(2)
        for conn in taken:
            conn.close()
        server.close()


@pytest.mark.parametrize(("address", "expected"), [
    ("kafka:9092", ("kafka", 9092)), ("SASL_SSL://kafka.example:9093", ("kafka.example", 9093)),
    ("[::1]:9092", ("::1", 9092)), ("kafka", None), ("kafka:x", None)])
def test_bootstrap_addresses_are_split_as_librdkafka_takes_them(address: str, expected: Any) -> None:
    assert split_address(address) == expected


def test_the_tcp_probe_tells_refused_unresolved_and_taken(closed_port: int, silent_listener: int) -> None:
    assert tcp_problem(f"127.0.0.1:{closed_port}") == "connection refused"
    assert tcp_problem("no-such-host.invalid:9092") == "name not resolved"
    assert tcp_problem(f"127.0.0.1:{silent_listener}") is None
    assert tcp_problem("kafka") == "not HOST:PORT"
    both = unreachable_reason(f"127.0.0.1:{closed_port},no-such-host.invalid:9092", "Local: Broker transport failure")
    assert both == f"127.0.0.1:{closed_port} connection refused, no-such-host.invalid:9092 name not resolved"


def test_a_full_backlog_is_told_as_timed_out() -> None:
    """A listener that never accepts, its backlog full: the kernel drops the next SYN."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    try:
        for _ in range(4):  # Linux queues backlog + 1; the rest wait for a SYN-ACK that never comes
            c = socket.socket()
            c.setblocking(False)
            c.connect_ex(("127.0.0.1", port))
            fillers.append(c)
        time.sleep(0.05)
        assert tcp_problem(f"127.0.0.1:{port}", timeout_s=0.3) == "timed out after 0.3 s"
    finally:
        for c in fillers:
            c.close()
        server.close()


def test_ensure_reachable_says_refused_and_librdkafkas_words_when_tcp_connects(
        closed_port: int, silent_listener: int) -> None:
    with pytest.raises(WorkerError) as refused:
        ensure_reachable({"bootstrap.servers": f"127.0.0.1:{closed_port}"}, timeout_s=0.5)
    assert str(refused.value).startswith(f"cannot reach brokers 127.0.0.1:{closed_port} within 0.5 s "
                                         "(connection refused): check kafka.bootstrap_servers")
    with pytest.raises(WorkerError) as silent:
        ensure_reachable({"bootstrap.servers": f"127.0.0.1:{silent_listener}"}, timeout_s=0.5)
    assert "(TCP connects, but no Kafka answer; librdkafka says: " in str(silent.value), str(silent.value)


@pytest.mark.parametrize("command", [["tail"], ["tail", "--dead-letters"], ["check"], ["produce-samples"],
                                     ["replay-dead-letters", "--no-progress"]])
def test_every_kafka_command_says_why_in_one_line_and_waits_10_s_by_default(
        command: list[str], closed_port: int, tmp_path: Path) -> None:
    env = {"EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{closed_port}"}
    help_text = run_cli(*command[:1], "--help", env=env, cwd=tmp_path).stdout
    assert re.search(r"--timeout\s.*?\[default:\s+10\.0[;\]]", help_text, re.S), help_text
    res = run_cli(*command, "--timeout", "0.5", env=env, cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert re.match(rf"error: cannot reach .*brokers 127\.0\.0\.1:{closed_port} within 0\.5 s \(connection refused\)",
                    lines[0]), lines[0]


# ---- tail: a dead letter's reason ----------------------------------------------------------------


def test_clip_cuts_at_a_word_boundary_with_an_ellipsis() -> None:
    assert clip("short reason") == "short reason"
    clipped = clip(UTF8_REASON)
    assert clipped.endswith("…") and len(clipped) <= 80
    assert UTF8_REASON.startswith(clipped[:-1]) and UTF8_REASON[len(clipped) - 1] == " "  # a whole word last
    assert clip("a " + "x" * 200, 20) == "a " + "x" * 17 + "…"  # one long word: cut inside it
    assert clip("line one\n   line two", 80) == "line one line two"


@dataclass
class FakeDeadLetter:
    """What format_dead_letter reads of a consumed record."""

    value_: bytes | None
    headers_: list[tuple[str, bytes]]

    def headers(self) -> list[tuple[str, bytes]]:
        return self.headers_

    def value(self) -> bytes | None:
        return self.value_

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_796_280_076_148

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return 3


def dead_letter_headers(error_class: str, message: str) -> list[tuple[str, bytes]]:
    reason = {"error_class": error_class, "message": message,
              "source": {"topic": "chat", "partition": 1, "offset": 9}, "original_size": 2}
    return [(ERROR_HEADER, orjson.dumps(reason)), (ERROR_CLASS_HEADER, error_class.encode())]


def test_a_dead_letter_line_keeps_the_reason_whole_words_and_the_value_apart() -> None:
    line = format_dead_letter(FakeDeadLetter(b"\xff\xfe", dead_letter_headers("invalid_utf8", UTF8_REASON)))  # type: ignore[arg-type]
    reason, value = line.split("  | value ")
    assert reason.endswith("…") and " in position 0: invalid start byte (the…" in reason, line
    assert value == "b'\\xff\\xfe'"
    line = format_dead_letter(FakeDeadLetter(None, dead_letter_headers("null_value", "the value is null")))  # type: ignore[arg-type]
    assert line.endswith("from chat[1]@9  the value is null  | value (null value)"), line


def test_tail_dead_letters_on_a_broker_cuts_reasons_at_words(broker: LocalBroker, tmp_path: Path) -> None:
    topics = Topics.fresh(broker, partitions=1)
    produce(broker.bootstrap, topics.dlq, [(None, b"\xff\xfe", dead_letter_headers("invalid_utf8", UTF8_REASON))])
    env = {"EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
           "EMOTION_WORKER_KAFKA__DEAD_LETTER_TOPIC": topics.dlq}
    res = run_cli("tail", "--dead-letters", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    [line] = res.stdout.splitlines()
    assert "invalid_utf8" in line and "in position 0: invalid start byte (the…  | value b'\\xff\\xfe'" in line, line


# ---- reload: which source changed the thresholds ---------------------------------------------------


def test_the_reload_log_names_the_source_that_changed(tiny_encoder: Path, tmp_path: Path,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    from worker.config import load_settings
    from worker.engine.engine import Engine, EngineOptions
    from worker.observe.metrics import Metrics
    from worker.reload import ThresholdReloader

    head = tmp_path / "head"
    build_random_head(head, TINY["hidden"], seed=2)
    config = tmp_path / "worker.yaml"
    config.write_text("model:\n  label_thresholds: {joy: 0.9}\n")
    engine = Engine(EngineOptions(embedder=str(tiny_encoder), head=str(head), label_thresholds={"joy": 0.9}))
    reloader = ThresholdReloader(engine, Metrics(), config, running=load_settings(config))

    def reload_line() -> str:
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="worker.reload"):
            assert reloader.reload()
        [line] = [r.getMessage() for r in caplog.records if "thresholds reloaded" in r.getMessage()]
        return line

    config.write_text("model:\n  label_thresholds: {joy: 0.9}\n  threshold: 0.3\n")
    line = reload_line()
    assert line.startswith(f"thresholds reloaded (model.threshold unset -> 0.3 in {config} line 3): "), line
    assert "thresholds.json" not in line and "joy" not in line.split(";")[1] and "anger 0.5->0.3" in line

    (head / "thresholds.json").write_text(json.dumps(dict.fromkeys(LABELS, 0.25)))
    line = reload_line()  # the global override hides the file's values
    assert line.startswith(f"thresholds reloaded (the head's thresholds.json {head / 'thresholds.json'} "
                           "(its content)): unchanged"), line

    config.write_text("model:\n  label_thresholds: {joy: 0.8, love: 0.7}\n")
    line = reload_line()
    assert line.startswith(f"thresholds reloaded (model.threshold 0.3 -> unset in {config} line 3; "
                           f"model.label_thresholds (joy, love) in {config}): "), line
    assert "anger 0.3->0.25" in line and "joy 0.9->0.8" in line and "love 0.3->0.7" in line

    own = tmp_path / "tuned.json"
    own.write_text(json.dumps(dict.fromkeys(LABELS, 0.4)))
    config.write_text(f"model:\n  label_thresholds: {{joy: 0.8, love: 0.7}}\n  thresholds_file: {own}\n")
    line = reload_line()
    assert line.startswith(f"thresholds reloaded (model.thresholds_file the head's thresholds.json "
                           f"{head / 'thresholds.json'} -> thresholds file {own} in {config} line 3): "), line

    line = reload_line()
    assert line.startswith(f"thresholds reloaded (no source changed (thresholds file {own})): unchanged"), line


# ---- a missing input topic ----------------------------------------------------------------------


def test_missing_topics_are_told_once_and_readiness_follows(caplog: pytest.LogCaptureFixture) -> None:
    health = Health(stall_after_s=30)
    missing = MissingTopics("chat", "b:9092", health)
    with caplog.at_level(logging.INFO, logger="worker.topics"):
        err = KafkaError(KafkaError.UNKNOWN_TOPIC_OR_PART, "Subscribed topic not available: chat: Broker: "
                                                           "Unknown topic or partition")
        assert missing.consumer_error(err) and missing.consumer_error(err)
        assert not missing.consumer_error(KafkaError(KafkaError._TRANSPORT, "down"))
        logs = [r.getMessage() for r in caplog.records]
        assert logs == ["input topic chat does not exist on b:9092 yet; waiting for it (create it, or set "
                        "kafka.input_topic)"]
        ready, body = health.ready()
        assert body["input_topic_exists"] is False and not ready
        missing.assigned([TopicPartition("other", 0)])
        assert health.ready()[1]["input_topic_exists"] is False
        missing.assigned([TopicPartition("chat", 0)])
        assert health.ready()[1]["input_topic_exists"] is True
        logs = [r.getMessage() for r in caplog.records]
        assert logs[-1] == "input topic chat exists now on b:9092: consuming it"
        for _ in range(3):
            missing.produce_failed("results", "output", "Broker: Unknown topic or partition")
        missing.produce_failed("results", "output", "Local: Message timed out")
        logs = [r.getMessage() for r in caplog.records]
        assert logs[2:] == ["output topic results does not exist on b:9092: create it, or set kafka.output_topic; "
                            "its records wait and are retried"]


def readyz(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=3) as r:
            return r.status, orjson.loads(r.read())
    except urllib.error.HTTPError as exc:
        return exc.code, orjson.loads(exc.read())
    except OSError:
        return 0, {}


def test_a_worker_waits_for_a_missing_input_topic_says_so_once_and_consumes_it_once_created(
        broker: LocalBroker, tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    tag = f"{time.monotonic_ns()}"
    topics = Topics(f"in-{tag}", f"out-{tag}", f"dlq-{tag}", f"group-{tag}")
    broker.create_topics([topics.output, topics.dlq], partitions=1)
    worker = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "w.log")
    told = f"input topic {topics.input} does not exist on {broker.bootstrap} yet; waiting for it"
    try:
        assert wait_until(lambda: told in worker.log(), 60), worker.log()[-3000:]
        status, body = wait_until(lambda: (lambda r: r if r[0] else None)(readyz(worker.port)), 10) or (0, {})
        assert status == 503 and body["input_topic_exists"] is False, body
        broker.create_topics([topics.input], partitions=1)
        created = time.monotonic()
        appeared = f"input topic {topics.input} exists now on {broker.bootstrap}: consuming it"
        # noticed at the consumer's next metadata refresh (every 10 s; librdkafka's own default: 5 min)
        assert wait_until(lambda: appeared in worker.log(), 30, interval=0.1), worker.log()[-3000:]
        assert time.monotonic() - created < TOPIC_REFRESH_MS / 1000 + 5
        assert wait_until(lambda: readyz(worker.port)[0] == 200, 20), readyz(worker.port)
        p = Producer({"bootstrap.servers": broker.bootstrap})
        p.produce(topics.input, value=orjson.dumps({"id": "late-1", "text": "finally here"}))
        assert p.flush(10) == 0
        [result] = read_all(broker.bootstrap, topics.output, expect=1, timeout=30)
        assert orjson.loads(result.value() or b"{}")["id"] == "late-1"
    finally:
        assert worker.stop() == 0
    log = worker.log()
    assert log.count(told) == 1, log
    assert "UNKNOWN_TOPIC_OR_PART" not in log and "Subscribed topic not available" not in log, log
