"""librdkafka configuration for the consumer and producer, from validated settings."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from typing import Any

from worker.config import KafkaSettings, Settings
from worker.observe.reachability import ClientReport, story_for

log = logging.getLogger("worker.kafka")
# librdkafka's errors, log lines and statistics go to a ClientReport: "cannot reach brokers" is
# told once per cluster (consumer and producer alike), the rest goes through Python logging and
# its repeat filter, never raw to stderr.
STATS_INTERVAL_MS = 5000
TOPIC_REFRESH_MS = 10_000  # the consumer's metadata refresh (librdkafka's default: 5 min)


def consumer_conf(
    k: KafkaSettings,
    *,
    on_commit: Callable[..., None] | None = None,
    on_stats: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "statistics.interval.ms": STATS_INTERVAL_MS,
        # Low fetch wait: an idle chat stream's next message is fetched within ~10 ms.
        "fetch.wait.max.ms": 10,
        # A missing input topic (or new partitions) is noticed within 10 s of its creation, not 5 min.
        "topic.metadata.refresh.interval.ms": TOPIC_REFRESH_MS,
        **k.common,
        **k.consumer,
        "bootstrap.servers": k.bootstrap_servers,
        "group.id": k.group_id,
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": k.auto_offset_reset,
        "partition.assignment.strategy": k.assignment_strategy,
        "session.timeout.ms": k.session_timeout_ms,
        "max.poll.interval.ms": k.max_poll_interval_ms,
    }
    report = ClientReport(story_for(k.bootstrap_servers), "consumer", on_stats)
    conf.update({"error_cb": report.error, "logger": report, "stats_cb": report.stats})
    if on_commit is not None:
        conf["on_commit"] = on_commit
    return conf


# librdkafka's default message.max.bytes: the largest record a producer sends unless configured.
DEFAULT_MESSAGE_MAX_BYTES = 1_000_000


def idempotent_producer_conf(conf: dict[str, Any]) -> dict[str, Any]:
    """Every producer of this project (the worker's publisher, replay-dead-letters): `conf` with
    the project's defaults under it and idempotence with acks=all over it (never configurable)."""
    return {"linger.ms": 5, "message.timeout.ms": 30_000, "compression.type": "lz4", **conf,
            "enable.idempotence": True, "acks": "all"}


def max_message_bytes(k: KafkaSettings) -> int:
    """The largest record the producer sends (its message.max.bytes, from kafka.common or
    kafka.producer); a dead letter above it has its value cut."""
    raw = {**k.common, **k.producer}.get("message.max.bytes", DEFAULT_MESSAGE_MAX_BYTES)
    try:
        return int(raw)
    except (TypeError, ValueError):
        return DEFAULT_MESSAGE_MAX_BYTES


def producer_conf(k: KafkaSettings) -> dict[str, Any]:
    servers = k.output_bootstrap_servers or k.bootstrap_servers
    report = ClientReport(story_for(servers), "producer")
    conf: dict[str, Any] = {"statistics.interval.ms": STATS_INTERVAL_MS, **k.common, **k.producer,
                            "bootstrap.servers": servers,
                            "error_cb": report.error, "logger": report, "stats_cb": report.stats}
    return conf


# exactly_once: how long a transaction may stay open before the broker aborts it. A worker killed
# mid-transaction holds back read_committed readers of the output, and its group's offsets, until then
# (or until a worker with the same transactional id starts). A transaction lasts a commit interval.
TRANSACTION_TIMEOUT_MS = 10_000


def transactional_id(k: KafkaSettings) -> str:
    """exactly_once: kafka.transactional_id, else `<group_id>-<hostname>-<pid>` (docs/exactly-once.md)."""
    return k.transactional_id or f"{k.group_id}-{socket.gethostname()}-{os.getpid()}"


def transactional_producer_conf(k: KafkaSettings) -> dict[str, Any]:
    """exactly_once: the producer's configuration with its transactional id; a record may wait for
    delivery at most as long as its transaction may stay open (librdkafka's rule)."""
    conf = producer_conf(k)
    timeout = conf.setdefault("transaction.timeout.ms", TRANSACTION_TIMEOUT_MS)
    conf.setdefault("message.timeout.ms", timeout)
    conf["transactional.id"] = transactional_id(k)
    return conf


def check_client_configs(settings: Settings) -> None:
    """librdkafka judges every client property at start (ConfigError, one line each): see
    worker.stream.kafka_check."""
    from worker.stream.kafka_check import check_client_configs as check

    check(settings)
