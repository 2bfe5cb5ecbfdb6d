"""A local broker that implements Kafka transactions, for the exactly-once tests and benchmark:
noida-db (PyPI), a single binary that emulates Kafka among other protocols, on loopback, on a free
port, its data in a temporary directory removed at stop. The same interface as `LocalBroker`
(context manager, `port`, `bootstrap`, `create_topics`, `stop`).

The package's `noida-db` console script is a Python wrapper that passes no signals on, so the
binary inside the package (`noida_db/noida-db`) is started directly; it stops on SIGINT and ignores
SIGTERM (as Tansu does). It prints a harmless GLIBC warning at start. What it does and does not do
of Kafka's transactions (verified here): docs/exactly-once.md.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from worker.devtools.broker import LocalBroker, packaged_binary


def noida_binary() -> Path:
    return packaged_binary("noida_db", "noida-db", "EMOTION_WORKER_NOIDA_DB", "the transactional test broker")


class TransactionalBroker(LocalBroker):
    """noida-db's Kafka service alone (`start --only kafka`), its data in a fresh directory."""

    def __init__(self, port: int | None = None, log_path: Path | None = None) -> None:
        super().__init__(port, log_path)
        self.data_dir: Path | None = None

    def command(self) -> list[str]:
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="noida-db-"))
        return [str(noida_binary()), "start", "--only", "kafka", "--kafka-port", str(self.port),
                "--host", "127.0.0.1", "--data-dir", str(self.data_dir)]

    def stop(self, timeout: float = 10.0) -> None:
        super().stop(timeout)
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None
