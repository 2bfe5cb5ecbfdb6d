"""One line per event; JSON optional; repeats collapsed. Secrets never reach a log line: the
worker logs its Kafka properties only through `config.redact`, and a filter masks the configured
secret values should one slip into any message (a librdkafka line, say)."""

from __future__ import annotations

import logging
import sys
import time

import orjson

# `extra=AS_IS` on a line that is its own summary (or a user's one-off event): never held back.
AS_IS = {"collapsed": True}


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return orjson.dumps(doc).decode()


class SecretMask(logging.Filter):
    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.secrets:
            msg = record.getMessage()
            masked = msg
            for secret in self.secrets:
                masked = masked.replace(secret, "***")
            if masked != msg:
                record.msg, record.args = masked, None
        return True


class RepeatFilter(logging.Filter):
    """Lets one line through per `window_s` for each kind of message (logger + its first words),
    and says how many were held back: a broker outage must not flood the log. At every level for
    the Kafka clients' lines (librdkafka logs a refused connection as an error, each attempt);
    the worker's own errors are each told. A record marked `collapsed` is already a summary."""

    def __init__(self, window_s: float = 10.0, prefix_chars: int = 60) -> None:
        super().__init__()
        self.window_s = window_s
        self.prefix_chars = prefix_chars
        self._seen: dict[str, tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "collapsed", False):
            return True
        kafka = record.name == "worker.kafka" or record.name.startswith("worker.kafka.")
        if record.levelno >= logging.ERROR and not kafka:
            return True
        key = f"{record.name}:{record.getMessage()[: self.prefix_chars]}"
        now = time.monotonic()
        last, held = self._seen.get(key, (0.0, 0))
        if now - last < self.window_s:
            self._seen[key] = (last, held + 1)
            return False
        self._seen[key] = (now, 0)
        if held:
            note = f" (and {held} like it in the last {self.window_s:.0f}s)"
            record.msg, record.args = record.getMessage() + note, None
        return True


def setup_logging(level: str = "INFO", json_lines: bool = False, secrets: list[str] | None = None) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if json_lines else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(SecretMask(secrets or []))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
