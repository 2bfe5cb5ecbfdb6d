"""Reaching a cluster from a command: one bounded metadata request, and one line when it fails,
saying why (a TCP connect to each bootstrap address tells refused, timed out or name not
resolved; when every address takes the connection, librdkafka's own words)."""

from __future__ import annotations

import logging
import socket
from typing import Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, ClusterMetadata  # type: ignore[attr-defined]

from worker.errors import WorkerError

# Every command that talks to Kafka waits this long for the brokers' first answer (its --timeout).
REACH_TIMEOUT_S = 10.0
PROBE_TIMEOUT_S = 2.0  # the TCP connect to each bootstrap address, once the metadata request failed

# The properties of a client configuration that an admin client also takes (not callbacks, not
# consumer- or producer-only properties).
_SKIP = {"group.id", "enable.auto.commit", "enable.auto.offset.store", "auto.offset.reset",
         "partition.assignment.strategy", "session.timeout.ms", "max.poll.interval.ms", "fetch.wait.max.ms",
         "on_commit", "stats_cb", "statistics.interval.ms", "error_cb", "logger", "enable.idempotence", "acks",
         "linger.ms", "transactional.id"}


def _quiet(_err: Any) -> None:
    """librdkafka's connection errors are summed up by `ensure_reachable`'s one line."""


def split_address(address: str) -> tuple[str, int] | None:
    """'kafka:9092', 'SSL://kafka:9093', '[::1]:9092' -> (host, port); None when it has no port."""
    address = address.strip().rsplit("://", 1)[-1]
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        return None
    return host.strip("[]"), int(port)


def tcp_problem(address: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why a TCP connection to `address` fails ('connection refused', 'timed out', 'name not
    resolved', ...), or None when it is taken."""
    parsed = split_address(address)
    if parsed is None:
        return "not HOST:PORT"
    host, port = parsed
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return "name not resolved"
    problem = "no address"
    for family, kind, proto, _name, where in infos:
        with socket.socket(family, kind, proto) as sock:
            sock.settimeout(timeout_s)
            try:
                sock.connect(where)
                return None
            except TimeoutError:
                problem = f"timed out after {timeout_s:g} s"
            except ConnectionRefusedError:
                problem = "connection refused"
            except OSError as exc:
                problem = (exc.strerror or str(exc)).lower()
    return problem


def unreachable_reason(servers: str, librdkafka_says: str, timeout_s: float = PROBE_TIMEOUT_S) -> str:
    """The reason in `cannot reach brokers X (REASON)`: what a TCP connect to each address says,
    one address: 'connection refused'; several: 'a:9092 connection refused, b:9092 name not
    resolved'. When every address takes a connection, the trouble is above TCP (TLS, SASL, not a
    Kafka listener...): librdkafka's words."""
    addresses = [a.strip() for a in servers.split(",") if a.strip()]
    problems = [(a, tcp_problem(a, timeout_s)) for a in addresses]
    if not problems or all(p is None for _, p in problems):
        return f"TCP connects, but no Kafka answer; librdkafka says: {librdkafka_says}"
    if len(problems) == 1:
        return str(problems[0][1])
    return ", ".join(f"{a} {p if p is not None else 'connects'}" for a, p in problems)


def ensure_reachable(conf: dict[str, Any], *, timeout_s: float = REACH_TIMEOUT_S,
                     what: str = "brokers") -> ClusterMetadata:
    """Cluster metadata from the brokers in `conf` (a consumer or producer configuration), or a
    WorkerError naming them, and why, when none answers within `timeout_s`."""
    admin_conf = {k: v for k, v in conf.items() if k not in _SKIP}
    admin_conf["error_cb"] = _quiet
    admin_conf["logger"] = logging.getLogger("worker.kafka.probe")
    admin_conf["log_level"] = 0  # librdkafka's own lines off: the one line below says it
    servers = str(conf.get("bootstrap.servers", "?"))
    try:
        return AdminClient(admin_conf).list_topics(timeout=timeout_s)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        said = err.str() if hasattr(err, "str") else str(err)
        reason = unreachable_reason(servers, said, min(PROBE_TIMEOUT_S, timeout_s))
        raise WorkerError(f"cannot reach {what} {servers} within {timeout_s:g} s ({reason}): check "
                          "kafka.bootstrap_servers (EMOTION_WORKER_KAFKA__BOOTSTRAP_SERVERS) and that the "
                          "cluster is up") from None
