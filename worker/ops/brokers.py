"""Reaching a cluster from a command: one bounded metadata request, and one line when it fails."""

from __future__ import annotations

import logging
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata  # type: ignore[attr-defined]

from worker.errors import WorkerError

# The properties of a client configuration that an admin client also takes (not callbacks, not
# consumer- or producer-only properties).
_SKIP = {"group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset",
         "partition.assignment.strategy", "session.timeout.ms", "max.poll.interval.ms", "fetch.wait.max.ms",
         "on_commit", "stats_cb", "statistics.interval.ms", "error_cb", "logger", "enable.idempotence", "acks",
         "linger.ms", "transactional.id"}


def _quiet(_err: Any) -> None:
    """librdkafka's connection errors are summed up by `ensure_reachable`'s one line."""


def ensure_reachable(conf: dict[str, Any], *, timeout_s: float = 5.0, what: str = "brokers") -> ClusterMetadata:
    """Cluster metadata from the brokers in `conf` (a consumer or producer configuration), or a
    WorkerError naming them when none answers within `timeout_s`."""
    admin_conf = {k: v for k, v in conf.items() if k not in _SKIP}
    admin_conf["error_cb"] = _quiet
    admin_conf["logger"] = logging.getLogger("worker.kafka.probe")
    admin_conf["log_level"] = 0  # librdkafka's own lines off: the one line below says it
    servers = conf.get("bootstrap.servers", "?")
    try:
        return AdminClient(admin_conf).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        reason = err.str() if hasattr(err, "str") else str(err)
        raise WorkerError(f"cannot reach {what} {servers} within {timeout_s:g} s ({reason}): check "
                          "kafka.bootstrap_servers (EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS) and that the "
                          "cluster is up") from None
