"""`emotion-worker check`, `tail` and `produce-samples` against a real broker (the embedded Tansu),
in-process through testkit.cli.run_cli; the model files are the tiny test models."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient  # type: ignore[attr-defined]

from testkit.cli import CliResult, run_cli
from testkit.kafka import Topics, read_all
from worker.devtools.broker import LocalBroker
from worker.labels import LABELS
from worker.ops.tail import Tail, TailOptions
from worker.stream.records import ERROR_CLASS_HEADER, ERROR_HEADER

UNREACHABLE = "127.0.0.1:1"


def env_for(broker: LocalBroker, topics: Topics, encoder: Path, head: Path, **extra: str) -> dict[str, str]:
    return {"EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "EMOTION_WORKER_KAFKA__INPUT_TOPIC": topics.input, "EMOTION_WORKER_KAFKA__OUTPUT_TOPIC": topics.output,
            "EMOTION_WORKER_KAFKA__DEAD_LETTER_TOPIC": topics.dlq, "EMOTION_WORKER_KAFKA__GROUP_ID": topics.group,
            "EMOTION_WORKER_MODEL__EMBEDDER": str(encoder), "EMOTION_WORKER_MODEL__HEAD": str(head), **extra}


def cli(*args: str, env: dict[str, str], cwd: Path) -> CliResult:
    res = run_cli(*args, env=env, cwd=cwd)  # cwd: no config/worker.yaml, so env and defaults only
    assert "Traceback" not in res.stderr
    return res


def one_line_error(res: CliResult) -> str:
    lines = [line for line in res.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), res.stderr
    return lines[0]


def produce_one_by_one(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    """One request per record, so the broker's end offsets are exact (Tansu reports a multi-record
    batch's end offset short)."""
    p = Producer({"bootstrap.servers": bootstrap})
    for v in values:
        p.produce(topic, value=v, partition=partition)
        assert p.flush(10) == 0


# ---- check --------------------------------------------------------------------------------------


def test_check_all_good_shows_origins_partitions_lag_and_model(
        broker: LocalBroker, tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    topics = Topics.fresh(broker, partitions=3)
    produce_one_by_one(broker.bootstrap, topics.input, [b'{"id": 1, "text": "hi"}'] * 5)
    c = Consumer({"bootstrap.servers": broker.bootstrap, "group.id": topics.group, "enable.auto.commit": False})
    c.commit(offsets=[TopicPartition(topics.input, 0, 2)], asynchronous=False)
    c.close()
    env = env_for(broker, topics, tiny_encoder, tiny_head)

    res = cli("check", "--timeout", "5", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    out = res.stdout
    assert "env EMOTION_WORKER_KAFKA__INPUT_TOPIC" in out and "observe.port" in out and "default" in out
    assert "librdkafka accepts" in out and f"{broker.bootstrap} answered" in out
    for topic in (topics.input, topics.output, topics.dlq):
        assert any(topic in line and "3 partitions" in line for line in out.splitlines()), out
    assert "all files present" in out and "not loaded" in out and "result: all good" in out

    res = cli("check", "--json", "--load-model", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    doc = orjson.loads(res.stdout)
    assert doc["problems"] == []
    assert [t["partitions"] for t in doc["topics"]] == [3, 3, 3]
    assert doc["brokers"]["input"]["bootstrap_servers"] == broker.bootstrap
    lag = {p["partition"]: p for p in doc["group"]["partitions"]}
    assert (lag[0]["committed"], lag[0]["end"], lag[0]["lag"]) == (2, 5, 3)
    assert lag[1]["committed"] is None and lag[1]["lag"] == 0
    assert doc["model"]["embedder"] == str(tiny_encoder) and doc["model"]["loaded"] is True
    assert isinstance(doc["model"]["sample_labels"], list)
    origins = {s["key"]: s["origin"] for s in doc["configuration"]["settings"]}
    assert origins["kafka.group_id"] == "env EMOTION_WORKER_KAFKA__GROUP_ID"
    assert origins["batching.max_wait_ms"] == "default"


def test_check_a_missing_topic_is_a_problem_and_is_not_created(
        broker: LocalBroker, tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    topics = Topics.fresh(broker, partitions=1)
    missing = f"missing-{uuid.uuid4().hex[:8]}"
    env = env_for(broker, topics, tiny_encoder, tiny_head, EMOTION_WORKER_KAFKA__DEAD_LETTER_TOPIC=missing)
    res = cli("check", env=env, cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"topic {missing} (dead letters) does not exist on {broker.bootstrap}" in res.stdout
    assert "result: 1 problem" in res.stdout
    # results and dead letters on another cluster (here: the same broker under another name)
    env["EMOTION_WORKER_KAFKA__OUTPUT_BOOTSTRAP_SERVERS"] = other = broker.bootstrap.replace("127.0.0.1", "localhost")
    res = cli("check", env=env, cwd=tmp_path)
    assert res.returncode == 1 and f"output brokers: {other} answered" in res.stdout
    assert f"topic {missing} (dead letters) does not exist on {other}" in res.stdout
    assert missing not in AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=5).topics


def test_check_unreachable_brokers_is_one_line_exit_2(tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    env = {"EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": UNREACHABLE}
    res = cli("check", "--timeout", "1", env=env, cwd=tmp_path)
    assert res.returncode == 2
    assert one_line_error(res).startswith(f"error: cannot reach brokers {UNREACHABLE} within 1 s")
    assert "%3|" not in res.stderr


def test_check_refused_client_property_is_a_problem(tmp_path: Path, tiny_encoder: Path, tiny_head: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"kafka:\n  bootstrap_servers: {UNREACHABLE}\n  common:\n    foo.bar: '1'\n"
                   f"    sasl.password: hunter2\nmodel:\n  embedder: {tiny_encoder}\n  head: {tiny_head}\n")
    res = cli("check", "-c", str(cfg), env={}, cwd=tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert 'No such configuration property: "foo.bar"' in res.stdout and "cannot reach" not in res.stderr
    assert "hunter2" not in res.stdout and "kafka.common.sasl.password" in res.stdout
    assert f"file {cfg}" in res.stdout


# ---- tail ---------------------------------------------------------------------------------------


def result_value(msg_id: str, labels: dict[str, float], source_ts: int, processing_ms: float = 12.0) -> bytes:
    scores = {label: labels.get(label, 0.01) for label in LABELS}
    return orjson.dumps({
        "schema": 1, "id": msg_id, "labels": sorted(labels, key=lambda lab: -labels[lab]), "scores": scores,
        "no_label": not labels, "truncated": False,
        "model": {"embedder": "e", "head": "h", "thresholds_hash": "x"},
        "source": {"topic": "in", "partition": 0, "offset": 1, "timestamp": source_ts},
        "processing_ms": processing_ms})


@pytest.fixture(scope="module")
def written(broker: LocalBroker) -> Topics:
    """Results and dead letters written by hand in the worker's formats (timestamps 1 s apart)."""
    topics = Topics.fresh(broker, partitions=2)
    p = Producer({"bootstrap.servers": broker.bootstrap, "linger.ms": 5})
    base = int(time.time() * 1000) - 60_000
    for i in range(6):
        labels = {"joy": 0.91, "love": 0.55} if i % 2 == 0 else {}
        p.produce(topics.output, value=result_value(f"m{i}", labels, base + i * 1000 - 30), key=b"room",
                  partition=i % 2, timestamp=base + i * 1000, headers=[("trace", b"t1"), ("trace", b"t2")])
    reason = {"error_class": "invalid_json", "message": "Expecting value: line 1 column 1 (char 0)",
              "source": {"topic": topics.input, "partition": 0, "offset": 7, "timestamp": base}, "original_size": 15}
    p.produce(topics.dlq, value=b"not json at all", partition=0, timestamp=base,
              headers=[(ERROR_HEADER, orjson.dumps(reason)), (ERROR_CLASS_HEADER, b"invalid_json")])
    p.produce(topics.dlq, value=b"\xff\xfe", partition=1, timestamp=base + 1,
              headers=[(ERROR_CLASS_HEADER, b"invalid_utf8")])
    assert p.flush(10) == 0
    return topics


def tail_env(broker: LocalBroker, topics: Topics) -> dict[str, str]:
    return {"EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
            "EMOTION_WORKER_KAFKA__OUTPUT_TOPIC": topics.output, "EMOTION_WORKER_KAFKA__DEAD_LETTER_TOPIC": topics.dlq}


def test_tail_from_beginning_json_gives_whole_records(broker: LocalBroker, written: Topics, tmp_path: Path) -> None:
    res = cli("tail", "--from-beginning", "--count", "4", "--json", env=tail_env(broker, written), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    docs = [orjson.loads(line) for line in res.stdout.splitlines()]
    assert len(docs) == 4
    assert {d["topic"] for d in docs} == {written.output}
    assert all(d["value"]["schema"] == 1 and d["key"] == "room" for d in docs)
    assert docs[0]["headers"] == [["trace", "t1"], ["trace", "t2"]]
    assert {d["value"]["id"] for d in docs} <= {f"m{i}" for i in range(6)}


def test_tail_shows_the_last_records_as_lines(broker: LocalBroker, written: Topics, tmp_path: Path) -> None:
    res = cli("tail", env=tail_env(broker, written), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert [line.split("id=")[1].split()[0] for line in lines] == [f"m{i}" for i in range(6)]  # by time
    assert "joy 0.91, love 0.55  [12 ms (30 ms end to end)]" in lines[0]
    assert "(no label)" in lines[1]
    res = cli("tail", "--count", "2", env=tail_env(broker, written), cwd=tmp_path)
    assert [line.split("id=")[1].split()[0] for line in res.stdout.splitlines()] == ["m4", "m5"]


def test_tail_dead_letters(broker: LocalBroker, written: Topics, tmp_path: Path) -> None:
    res = cli("tail", "--dead-letters", "--from-beginning", env=tail_env(broker, written), cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    first, second = sorted(res.stdout.splitlines(), key=lambda line: "invalid_utf8" in line)
    assert "invalid_json" in first and f"from {written.input}[0]@7" in first and "Expecting value" in first
    assert "b'not json at all'" in first
    assert "invalid_utf8" in second and "b'\\xff\\xfe'" in second
    res = cli("tail", "--dead-letters", "--from-beginning", "--json", env=tail_env(broker, written), cwd=tmp_path)
    docs = sorted((orjson.loads(line) for line in res.stdout.splitlines()), key=lambda d: d["partition"])
    assert [d.get("value_encoding") for d in docs] == ["text", "base64"]
    assert docs[1]["value"] == "//4="


def test_tail_follow_prints_new_records_and_commits_nothing(broker: LocalBroker, tmp_path: Path) -> None:
    topics = Topics.fresh(broker, partitions=1)
    from worker.config import KafkaSettings
    from worker.ops.tail import reader_conf

    conf = reader_conf(KafkaSettings(bootstrap_servers=broker.bootstrap, output_topic=topics.output))
    lines: list[str] = []
    stop = threading.Event()
    reader = Tail(conf, TailOptions(topics.output, follow=True), lines.append)
    thread = threading.Thread(target=reader.run, args=(stop,))
    thread.start()
    try:
        deadline = time.monotonic() + 20
        p = Producer({"bootstrap.servers": broker.bootstrap})
        while not any("id=late" in line for line in lines) and time.monotonic() < deadline:
            p.produce(topics.output, value=result_value("late", {}, 1))  # until the reader, started, sees one
            p.flush(5)
            time.sleep(0.3)
        assert any("id=late" in line for line in lines)
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})  # kept alive until its answer came
    groups = admin.list_consumer_groups(request_timeout=5).result(timeout=30)
    assert conf["group.id"] not in {g.group_id for g in groups.valid}  # partitions assigned: no group, no commit


# ---- produce-samples ----------------------------------------------------------------------------


def test_produce_samples_no_limit_count_from_env(broker: LocalBroker, tmp_path: Path) -> None:
    topics = Topics.fresh(broker, partitions=2)
    env = {"EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
           "EMOTION_WORKER_KAFKA__INPUT_TOPIC": topics.input}
    res = cli("produce-samples", "--rate", "0", "--count", "60", env=env, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"sent 60 messages (2 broken on purpose) to {topics.input}"
    records = read_all(broker.bootstrap, topics.input, expect=60, timeout=20)
    assert len(records) == 60
    ok = [orjson.loads(m.value() or b"") for m in records if (m.value() or b"").startswith(b'{"id":"m')]
    assert len(ok) == 58 and all(d["text"] for d in ok)


def test_produce_samples_from_config_file_topic_option_overrides(broker: LocalBroker, tmp_path: Path) -> None:
    topics = Topics.fresh(broker, partitions=1)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"kafka:\n  bootstrap_servers: {broker.bootstrap}\n  input_topic: not-this-one\n")
    res = cli("produce-samples", "-c", str(cfg), "--topic", topics.input, "--rate", "200", "--count", "5",
              env={}, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"sent 5 messages (0 broken on purpose) to {topics.input}"
    assert len(read_all(broker.bootstrap, topics.input, expect=5, timeout=20)) == 5


def test_produce_samples_unreachable_or_missing_topic_is_one_line(broker: LocalBroker, tmp_path: Path) -> None:
    res = cli("produce-samples", "--bootstrap", UNREACHABLE, "--timeout", "1", "--count", "3", env={}, cwd=tmp_path)
    assert res.returncode == 2 and "cannot reach brokers 127.0.0.1:1" in one_line_error(res)
    res = cli("produce-samples", "--bootstrap", broker.bootstrap, "--topic", "no-such-topic", "--count", "1",
              env={}, cwd=tmp_path)
    assert res.returncode == 2 and "topic no-such-topic does not exist" in one_line_error(res)


# ---- demo's broker ------------------------------------------------------------------------------


def test_demo_runs_the_default_model_live_and_names_its_broker_as_its_own(tmp_path: Path) -> None:
    """The README's first command, from another directory, for a few seconds: results stream in,
    and the startup line says the brokers are the demo's (not the settings file's)."""
    (tmp_path / "worker.yaml").write_text("kafka:\n  bootstrap_servers: localhost:9092\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOTION_WORKER_")}
    res = subprocess.run([sys.executable, "-m", "worker", "demo", "--config", "worker.yaml", "--seconds", "8"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    assert res.stdout.startswith("local broker on 127.0.0.1:")
    assert any("ms end to end" in line for line in res.stdout.splitlines()[1:]), res.stdout
    broker = res.stdout.split()[3].rstrip(";")
    assert f"brokers {broker} from demo (its local broker)" in res.stderr, res.stderr
    assert "Traceback" not in res.stdout + res.stderr


def test_local_broker_start_prints_no_librdkafka_line(capfd: pytest.CaptureFixture[str]) -> None:
    with LocalBroker() as b:
        b.create_topics(["t"], partitions=1)
    captured = capfd.readouterr()
    assert "%3|" not in captured.err and "%6|" not in captured.err and "FAIL" not in captured.err


def test_produce_samples_counts_delivery_failures() -> None:
    """The cluster goes away: every message fails after message.timeout.ms, and is counted as such."""
    from worker.config import KafkaSettings
    from worker.devtools.samples import input_producer_conf, produce_samples

    with LocalBroker() as gone:
        gone.create_topics(["t"], partitions=1)
        k = KafkaSettings(bootstrap_servers=gone.bootstrap, input_topic="t", producer={"message.timeout.ms": "1000"})
    report = produce_samples(input_producer_conf(k), "t", rate=0, count=5, stop=threading.Event(),
                             flush_timeout_s=10)
    assert (report.produced, report.delivered, report.failed, report.unconfirmed) == (5, 0, 5, 0)
    assert report.summary() == "sent 0 messages (0 broken on purpose) to t"
    assert report.problems() == f"5 not delivered (first: {report.first_error})" and report.first_error
