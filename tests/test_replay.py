"""replay-dead-letters against a real broker and the real worker: a fix turns dead letters into
results (also a raised input limit: too-large values are dead-lettered whole), an interrupted replay
resumes without loss, a poison message cannot loop forever, a cut dead letter is never re-produced,
and usage or connection mistakes are one line and exit 2. The rules themselves:
tests/test_replay_rules.py."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import orjson
import pytest

from testkit.cli import CliResult, run_cli
from testkit.kafka import ROOT, Topics, produce, read_all, start_worker, worker_env
from worker.devtools.broker import LocalBroker
from worker.stream.records import (
    ERROR_CLASS_HEADER,
    REPLAY_COUNT_HEADER,
    TRUNCATED_HEADER,
    cut_value,
    dead_letter_record,
)
from worker.stream.types import Envelope, Rejected, Source


def replay(env: dict[str, str], *args: str) -> CliResult:
    """replay-dead-letters in-process, as a user would type it."""
    return run_cli("replay-dead-letters", "--no-progress", "--idle-timeout", "3", *args, env=env)


def test_replay_after_a_config_fix_turns_dead_letters_into_results(
        broker: LocalBroker, tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    topics = Topics.fresh(broker, partitions=2)
    body = [(f"k{i}".encode(), orjson.dumps({"id": f"b{i}", "body": f"thanks so much {i}"}), [("trace", b"t")])
            for i in range(20)]
    broken = [(b"x", b"not json at all", []) for _ in range(10)]
    produce(broker.bootstrap, topics.input, body + broken)
    worker = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "a.log")
    try:
        assert len(read_all(broker.bootstrap, topics.dlq, expect=30, timeout=60)) == 30
    finally:
        assert worker.stop() == 0
    env = worker_env(broker, topics, tiny_encoder, tiny_head)

    dry = replay(env, "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "would replay 30" in dry.stdout and "missing_text" in dry.stdout and "invalid_json" in dry.stdout
    assert len(read_all(broker.bootstrap, topics.input, expect=10**9, timeout=10, idle=1.5)) == 30  # nothing produced

    # The fix: the producer's field is `body`. Restart the worker with it, replay that class only.
    fixed = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "b.log",
                         EMOTION_WORKER_INPUT__TEXT_FIELD="body")
    try:
        res = replay(env, "--error-class", "missing_text")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "replayed 20" in res.stdout
        outputs = read_all(broker.bootstrap, topics.output, expect=20, timeout=60)
        assert Counter(str(orjson.loads(m.value())["id"]) for m in outputs) == Counter(f"b{i}" for i in range(20))
        for m in outputs:
            headers = dict(m.headers() or [])
            assert headers["trace"] == b"t" and headers[REPLAY_COUNT_HEADER] == b"1"
            assert not any(k.startswith("emotion-worker.error") for k in headers)

        # The loop guard: invalid JSON stays invalid; replayed once, it is refused the second time.
        # (A selection of its own: its replay group starts at the beginning, not past the first replay's.)
        first = replay(env, "--error-class", "invalid_json", "--max-replays", "1")
        assert first.returncode == 0 and "replayed 10" in first.stdout, first.stdout + first.stderr
        assert len(read_all(broker.bootstrap, topics.dlq, expect=40, timeout=60)) == 40
        again = replay(env, "--error-class", "invalid_json", "--max-replays", "1")
        assert again.returncode == 1, again.stdout + again.stderr
        assert "replayed 0" in again.stdout and "loop guard 10" in again.stdout
    finally:
        assert fixed.stop() == 0


def test_interrupted_replay_resumes_without_loss(broker: LocalBroker, tiny_encoder: Path, tiny_head: Path,
                                                 tmp_path: Path) -> None:
    topics = Topics.fresh(broker, partitions=3)
    target = f"{topics.input}-replayed"
    broker.create_topics([target], partitions=3)
    n, chunk = 3000, 100
    records = []
    for i in range(n):
        env_ = Envelope(Source(topics.input, i % 3, i, None), f"k{i}".encode(),
                        [("idx", str(i).encode())], orjson.dumps({"id": f"d{i}", "body": "x"}))
        rec = dead_letter_record(Rejected(env_, "missing_text", "object has no 'text' field"),
                                 max_record_bytes=1_000_000)
        records.append((rec.key, rec.value, rec.headers))
    produce(broker.bootstrap, topics.dlq, records)
    env = worker_env(broker, topics, tiny_encoder, tiny_head)
    args = ["--to", target, "--chunk", str(chunk)]
    proc = subprocess.Popen([sys.executable, "-m", "worker", "replay-dead-letters", "--no-progress", *args,
                             "--rate", "500"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    seen: list[int] = []

    def count() -> None:
        while proc.poll() is None:
            seen.append(len(read_all(broker.bootstrap, target, expect=10**9, timeout=5, idle=0.3)))

    counter = threading.Thread(target=count, daemon=True)
    counter.start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and (not seen or seen[-1] < 800):
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait(10)
    counter.join(10)
    partial = len(read_all(broker.bootstrap, target, expect=10**9, timeout=10, idle=1.5))
    assert 0 < partial < n, f"the replay was not interrupted mid-way ({partial} of {n})"

    res = replay(env, *args)
    assert res.returncode == 0, res.stdout + res.stderr
    out = read_all(broker.bootstrap, target, expect=10**9, timeout=30, idle=2)
    got = Counter(str(orjson.loads(m.value())["id"]) for m in out)
    assert set(got) == {f"d{i}" for i in range(n)}, "dead letters lost across the interruption"
    duplicates = sum(got.values()) - n
    assert duplicates <= chunk, f"{duplicates} duplicates: more than the one chunk in flight at the kill"


def test_too_large_values_are_dead_lettered_whole_and_replayed_once_the_limit_is_raised(
        broker: LocalBroker, tiny_encoder: Path, tiny_head: Path, tmp_path: Path) -> None:
    topics = Topics.fresh(broker, partitions=2)
    big = [(f"k{i}".encode(), orjson.dumps({"id": f"big{i}", "text": f"thanks so much {i}", "pad": "x" * 80_000}),
            [("trace", f"t{i}".encode())]) for i in range(3)]
    produce(broker.bootstrap, topics.input, big)
    worker = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "a.log",
                          EMOTION_WORKER_INPUT__MAX_VALUE_BYTES="65536")
    try:
        dead = read_all(broker.bootstrap, topics.dlq, expect=3, timeout=60)
    finally:
        assert worker.stop() == 0
    assert sorted(m.value() or b"" for m in dead) == sorted(value for _, value, _ in big)  # whole, not cut
    for m in dead:
        headers = dict(m.headers() or [])
        assert headers[ERROR_CLASS_HEADER] == b"too_large" and TRUNCATED_HEADER not in headers
        assert headers["trace"] == b"t" + (m.key() or b"k?")[1:]

    raised = start_worker(broker, topics, tiny_encoder, tiny_head, tmp_path / "b.log",
                          EMOTION_WORKER_INPUT__MAX_VALUE_BYTES="200000")
    try:
        res = replay(worker_env(broker, topics, tiny_encoder, tiny_head), "--error-class", "too_large")
        assert res.returncode == 0, res.stdout + res.stderr
        assert "replayed 3;" in res.stdout and "not replayable (value cut) 0" in res.stdout
        outputs = read_all(broker.bootstrap, topics.output, expect=3, timeout=60)
        assert sorted(orjson.loads(m.value() or b"{}")["id"] for m in outputs) == ["big0", "big1", "big2"]
        # nothing came back as a dead letter (before the fix, cut values came back as invalid_json)
        assert len(read_all(broker.bootstrap, topics.dlq, expect=10**9, timeout=10, idle=1.5)) == 3
    finally:
        assert raised.stop() == 0


def test_a_cut_dead_letter_is_counted_not_replayable_and_exits_1(broker: LocalBroker, tiny_encoder: Path,
                                                                  tiny_head: Path) -> None:
    topics = Topics.fresh(broker, partitions=1)
    records = []
    for i, reason in enumerate(["too_large", "missing_text"]):
        env_ = Envelope(Source(topics.input, 0, i, None), b"k", [], orjson.dumps({"id": f"c{i}", "pad": "y" * 500}))
        rec = dead_letter_record(Rejected(env_, reason, "whatever"), max_record_bytes=1_000_000)
        if reason == "too_large":
            rec = cut_value(rec, 100)  # as the worker writes one that did not fit the dead-letter topic
        records.append((rec.key, rec.value, rec.headers))
    produce(broker.bootstrap, topics.dlq, records)
    env = worker_env(broker, topics, tiny_encoder, tiny_head)

    dry = replay(env, "--dry-run")
    assert dry.returncode == 1, dry.stdout + dry.stderr
    assert "would replay 1; not replayable (value cut) 1" in dry.stdout
    assert "too_large        1  (1 not replayable: value cut)" in dry.stdout

    res = replay(env)
    assert res.returncode == 1, res.stdout + res.stderr
    assert "replayed 1; not replayable (value cut) 1" in res.stdout
    replayed = read_all(broker.bootstrap, topics.input, expect=10**9, timeout=10, idle=1.5)
    assert [orjson.loads(m.value() or b"{}")["id"] for m in replayed] == ["c1"]  # never the cut one


@pytest.mark.parametrize(("args", "expected"), [
    (["--error-class", "missing_txt"], "did you mean missing_text?"),
    (["--chunk", "0"], "'--chunk'"),
    (["--rate", "-1"], "'--rate'"),
    (["--max-replays", "0"], "'--max-replays'"),
    (["--idle-timeout", "0"], "'--idle-timeout'"),
    (["--since", "yesterday"], "ISO 8601"),
    (["--until", "1796305800"], "in epoch seconds use 1796305800000"),
    (["--until", "99999999999999999999"], "after year 9999"),
    (["--from-offset", "0-12"], "PARTITION:OFFSET"),
    (["--timeout", "1"], "cannot reach the dead-letter topic's brokers 127.0.0.1:1 within 1 s (connection refused)"),
])
def test_usage_and_connection_mistakes_are_one_line_and_exit_2(args: list[str], expected: str,
                                                               tmp_path: Path) -> None:
    res = run_cli("replay-dead-letters", *args, env={"EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": "127.0.0.1:1"},
                  cwd=tmp_path)
    assert res.returncode == 2, res.stdout + res.stderr
    assert "Traceback" not in res.stdout + res.stderr
    errors = [line for line in res.stderr.splitlines() if line.lower().startswith("error")]
    assert len(errors) == 1 and expected in errors[0], res.stderr


def test_replaying_one_class_leaves_the_others_for_their_own_replay(broker: LocalBroker, tiny_encoder: Path,
                                                                     tiny_head: Path) -> None:
    """The workflow "fix the cause, then replay that class": a replay of one class does not move a
    replay of another past its dead letters; a selection that finds none says what it passed over."""
    topics = Topics.fresh(broker, partitions=1)
    target = f"{topics.input}-replayed"
    broker.create_topics([target], partitions=1)
    records = []
    for i, reason in enumerate(["not_an_object", "invalid_utf8", "not_an_object", "missing_text"]):
        env_ = Envelope(Source(topics.input, 0, i, None), f"k{i}".encode(), [], orjson.dumps({"id": f"r{i}"}))
        rec = dead_letter_record(Rejected(env_, reason, "whatever"), max_record_bytes=1_000_000)
        records.append((rec.key, rec.value, rec.headers))
    produce(broker.bootstrap, topics.dlq, records)
    env = worker_env(broker, topics, tiny_encoder, tiny_head)

    first = replay(env, "--error-class", "not_an_object", "--to", target)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "read 4 dead letters; selected 2; replayed 2;" in first.stdout
    assert "not selected (other classes): 2: invalid_utf8 1, missing_text 1" in first.stdout
    assert f"replay group {topics.group}-replay-not_an_object: " in first.stdout

    second = replay(env, "--error-class", "invalid_utf8", "--to", target)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "selected 1; replayed 1;" in second.stdout, second.stdout
    assert f"replay group {topics.group}-replay-invalid_utf8: " in second.stdout

    again = replay(env, "--error-class", "invalid_utf8", "--to", target)
    assert again.returncode == 0 and "read 0 dead letters; selected 0; replayed 0;" in again.stdout, again.stdout

    rest = replay(env, "--error-class", "missing_text", "--error-class", "invalid_utf8", "--to", target)
    assert "selected 2; replayed 2;" in rest.stdout, rest.stdout
    assert "not selected (other classes): 2: not_an_object 2" in rest.stdout
    assert f"replay group {topics.group}-replay-invalid_utf8+missing_text: " in rest.stdout
    replayed = read_all(broker.bootstrap, target, expect=5, timeout=30)
    assert Counter(orjson.loads(m.value() or b"{}")["id"] for m in replayed) == Counter(
        {"r0": 1, "r2": 1, "r1": 2, "r3": 1})


def test_a_replay_up_to_until_leaves_what_came_later_for_the_next_run(broker: LocalBroker, tiny_encoder: Path,
                                                                      tiny_head: Path) -> None:
    """`--until`: the replay group stops at the first later dead letter instead of passing over
    it, so the next replay (here without a window) replays what came after the window."""
    topics = Topics.fresh(broker, partitions=1)
    target = f"{topics.input}-replayed"
    broker.create_topics([target], partitions=1)

    def dead_letters(ids: range) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes | None]]]]:
        out = []
        for i in ids:
            env_ = Envelope(Source(topics.input, 0, i, None), f"k{i}".encode(), [], orjson.dumps({"id": f"r{i}"}))
            rec = dead_letter_record(Rejected(env_, "missing_text", "whatever"), max_record_bytes=1_000_000)
            out.append((rec.key, rec.value, rec.headers))
        return out

    produce(broker.bootstrap, topics.dlq, dead_letters(range(3)))
    time.sleep(0.05)
    cut = int(time.time() * 1000)
    time.sleep(0.05)
    produce(broker.bootstrap, topics.dlq, dead_letters(range(3, 5)))
    env = worker_env(broker, topics, tiny_encoder, tiny_head)

    windowed = replay(env, "--until", str(cut), "--to", target)
    assert windowed.returncode == 0, windowed.stdout + windowed.stderr
    assert "read 3 dead letters; selected 3; replayed 3;" in windowed.stdout, windowed.stdout
    assert "stopped at --until on partitions 0" in windowed.stdout
    rest = replay(env, "--to", target)
    assert rest.returncode == 0 and "read 2 dead letters; selected 2; replayed 2;" in rest.stdout, rest.stdout
    replayed = read_all(broker.bootstrap, target, expect=5, timeout=30)
    assert sorted(orjson.loads(m.value() or b"{}")["id"] for m in replayed) == [f"r{i}" for i in range(5)]
