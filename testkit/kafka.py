"""Black-box helpers: produce to and read from a real broker, run the worker as a real process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, Producer, TopicPartition

from testkit.wait import wait_until
from worker.devtools.broker import LocalBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
# Tansu holds a new group's first join for half of session.timeout.ms: 2 s keeps a worker's start
# ~1 s and a killed member's eviction 2 s; heartbeats every 500 ms keep live members in the group.
SESSION_TIMEOUT_MS = 2000
HEARTBEAT_INTERVAL_MS = 500


@dataclass
class Topics:
    input: str
    output: str
    dlq: str
    group: str

    @classmethod
    def fresh(cls, broker: LocalBroker, partitions: int = 3) -> Topics:
        tag = uuid.uuid4().hex[:8]
        t = cls(f"in-{tag}", f"out-{tag}", f"dlq-{tag}", f"group-{tag}")
        broker.create_topics([t.input], partitions=partitions)
        broker.create_topics([t.output, t.dlq], partitions=partitions)
        return t


Header = tuple[str, str | bytes | None]


def produce(bootstrap: str, topic: str, records: Iterable[tuple[bytes | None, bytes | None, list[Header]]],
            partition: int | None = None) -> int:
    p = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5, "enable.idempotence": True,
                  "message.max.bytes": 20_000_000})
    n = 0
    for key, value, headers in records:
        while True:
            try:
                if partition is None:
                    p.produce(topic, value=value, key=key, headers=headers)
                else:
                    p.produce(topic, value=value, key=key, headers=headers, partition=partition)
                break
            except BufferError:
                p.poll(0.1)
        n += 1
        p.poll(0)
    assert p.flush(30) == 0
    return n


def _reader(bootstrap: str) -> Consumer:
    return Consumer({"bootstrap.servers": bootstrap, "group.id": f"reader-{uuid.uuid4().hex[:8]}",
                     "enable.auto.commit": False, "fetch.wait.max.ms": 50})


def _partitions(c: Consumer, topic: str, timeout: float) -> list[int]:
    def known() -> list[int]:
        md = c.list_topics(topic, timeout=5).topics.get(topic)
        return sorted(md.partitions) if md is not None and md.error is None else []

    return wait_until(known, timeout)


def read_all(bootstrap: str, topic: str, *, expect: int, timeout: float = 60.0, idle: float = 2.0) -> list[Message]:
    """Read a topic from the beginning (partitions assigned directly: no group join) until `expect`
    messages, or until the timeout, or once at least one message came and nothing new for `idle` s
    while expecting "everything" (expect >= 10**9)."""
    c = _reader(bootstrap)
    deadline = time.monotonic() + timeout
    parts = _partitions(c, topic, timeout)
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in parts])
    out: list[Message] = []
    last_new = time.monotonic()
    while len(out) < expect and time.monotonic() < deadline:
        batch = [m for m in c.consume(1000, timeout=0.2) if m.error() is None]
        if batch:
            out.extend(batch)
            last_new = time.monotonic()
        elif expect >= 10**9 and time.monotonic() - last_new > idle:
            break
    c.close()
    return out


class TopicReader:
    """One reader of several topics from the beginning (partitions assigned directly: no group
    join) that keeps what it read: poll until a condition holds, then until nothing new comes."""

    def __init__(self, bootstrap: str, *topics: str, timeout: float = 30.0) -> None:
        self.consumer = _reader(bootstrap)
        self.messages: dict[str, list[Message]] = {t: [] for t in topics}
        self.consumer.assign([TopicPartition(t, p, OFFSET_BEGINNING) for t in topics
                              for p in _partitions(self.consumer, t, timeout)])

    def __enter__(self) -> TopicReader:
        return self

    def __exit__(self, *_: object) -> None:
        self.consumer.close()

    def poll(self, timeout: float = 0.2) -> list[Message]:
        """What arrived since the last poll (waits up to `timeout` for something)."""
        batch = [m for m in self.consumer.consume(1000, timeout=timeout) if m.error() is None]
        for m in batch:
            topic = m.topic()
            assert topic is not None
            self.messages[topic].append(m)
        return batch

    def until(self, condition: Callable[[list[Message]], bool], timeout: float) -> bool:
        """Poll until condition(new messages) is true, or the timeout; returns the last answer."""
        deadline = time.monotonic() + timeout
        while True:
            if condition(self.poll()):
                return True
            if time.monotonic() >= deadline:
                return False

    def drain(self, idle: float = 2.0, timeout: float = 60.0) -> None:
        """Poll until nothing new for `idle` s (or the timeout): late arrivals, duplicates."""
        last_new = time.monotonic()
        deadline = last_new + timeout
        while time.monotonic() < deadline and time.monotonic() - last_new < idle:
            if self.poll():
                last_new = time.monotonic()


def read_present(bootstrap: str, topic: str, *, timeout: float = 10.0, idle: float = 1.0) -> list[Message]:
    """What a topic holds once nothing writes to it any more: read until the first message (or the
    timeout), then until nothing new for `idle` s."""
    with TopicReader(bootstrap, topic, timeout=timeout) as reader:
        reader.until(bool, timeout)
        reader.drain(idle=idle, timeout=timeout)
    return reader.messages[topic]


def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    c = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    res = c.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    c.close()
    return {tp.partition: tp.offset for tp in res}


def end_offsets(bootstrap: str, topic: str, expect: int) -> dict[int, int]:
    """One past the last offset of each partition, from reading the topic (Tansu's watermark
    answers are not reliable enough to test against)."""
    out: dict[int, int] = {}
    for m in read_all(bootstrap, topic, expect=expect, timeout=30):
        part, offset = m.partition(), m.offset()
        assert part is not None and offset is not None
        out[part] = max(out.get(part, 0), offset + 1)
    return out


LIVE: list[WorkerProcess] = []  # every worker started; the conftest kills leftovers after each test


@dataclass
class WorkerProcess:
    env: dict[str, str]
    log_path: Path
    port: int
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0
    exit_codes: list[int] = field(default_factory=list)

    def start(self) -> WorkerProcess:
        self.starts += 1
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen([sys.executable, "-m", "worker", "run"], cwd=ROOT, env=self.env,
                                     stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        LIVE.append(self)
        return self

    def assignments(self) -> int:
        """How many times the worker logged a partition assignment (a group join or rebalance)."""
        return self.log().count(" assigned ")

    def wait_assigned(self, timeout: float = 60.0, *, more_than: int = 0) -> bool:
        """Wait until the worker logged more than `more_than` assignments (see assignments())."""
        return wait_until(lambda: self.assignments() > more_than, timeout)

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        rc = self.proc.wait(timeout=timeout)
        self.exit_codes.append(rc)
        return rc

    def stop(self, timeout: float = 30.0) -> int:
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else 0
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.wait(10)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def worker_env(broker: LocalBroker, topics: Topics, encoder: Path, head: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EMOTION_WORKER_")}
    env.update({
        "EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS": broker.bootstrap,
        "EMOTION_WORKER_KAFKA__INPUT_TOPIC": topics.input,
        "EMOTION_WORKER_KAFKA__OUTPUT_TOPIC": topics.output,
        "EMOTION_WORKER_KAFKA__DEAD_LETTER_TOPIC": topics.dlq,
        "EMOTION_WORKER_KAFKA__GROUP_ID": topics.group,
        "EMOTION_WORKER_KAFKA__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "EMOTION_WORKER_KAFKA__CONSUMER": f'{{"heartbeat.interval.ms": {HEARTBEAT_INTERVAL_MS}}}',
        "EMOTION_WORKER_KAFKA__COMMIT_INTERVAL_MS": "200",
        "EMOTION_WORKER_MODEL__EMBEDDER": str(encoder),
        "EMOTION_WORKER_MODEL__HEAD": str(head),
        "EMOTION_WORKER_SHUTDOWN_TIMEOUT_S": "20",
        "PYTHONUNBUFFERED": "1",
    })
    env.update(extra)
    return env


def start_worker(broker: LocalBroker, topics: Topics, encoder: Path, head: Path, log_path: Path,
                 **extra: str) -> WorkerProcess:
    port = free_port()
    env = worker_env(broker, topics, encoder, head, EMOTION_WORKER_OBSERVE__PORT=str(port),
                     EMOTION_WORKER_OBSERVE__HOST="127.0.0.1", **extra)
    return WorkerProcess(env, log_path, port).start()
