"""librdkafka checks the client configurations at start, before anything heavy: every property in
kafka.common / kafka.consumer / kafka.producer, as the consumer and the producer will be built.

A client constructed without bootstrap servers opens no connection; librdkafka refuses an unknown
property or a bad value while reading its configuration, and combinations (an SSL CA file that
does not load, a SASL mechanism this build lacks) while creating the client.
"""

from __future__ import annotations

import logging
import re
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer

from worker.config import Settings, config_line, is_secret, origins_of
from worker.errors import ConfigError
from worker.settings_sources import Path_
from worker.stream.kafka_conf import consumer_conf, producer_conf, transactional_producer_conf

# librdkafka's log lines while checking (e.g. "no bootstrap.servers configured") are not news.
_silent = logging.getLogger("worker.kafka.check")
_silent.addHandler(logging.NullHandler())
_silent.propagate = False

# The librdkafka properties the worker sets from its own settings: a combination librdkafka refuses
# that names one of these is that setting's problem.
_OWNED = {
    "group.id": ("kafka", "group_id"),
    "auto.offset.reset": ("kafka", "auto_offset_reset"),
    "partition.assignment.strategy": ("kafka", "assignment_strategy"),
    "session.timeout.ms": ("kafka", "session_timeout_ms"),
    "max.poll.interval.ms": ("kafka", "max_poll_interval_ms"),
}
# The producer's guarantees, set by the publisher whatever the settings say.
_PRODUCER_GUARANTEES = {"enable.idempotence": True, "acks": "all"}


def _plain(conf: dict[str, Any]) -> dict[str, Any]:
    """The configuration without callbacks and without brokers (so no connection is tried)."""
    return {k: v for k, v in conf.items()
            if k not in {"bootstrap.servers", "logger"} and not callable(v)} | {"logger": _silent}


def _refusal(client: type[Consumer] | type[Producer], conf: dict[str, Any]) -> str | None:
    """librdkafka's words when it refuses `conf`, None when it takes it."""
    try:
        instance = client(conf)
    except KafkaException as exc:
        err = exc.args[0] if exc.args else exc
        text = err.str() if isinstance(err, KafkaError) else str(err)
        return re.sub(r"^Failed to create (consumer|producer): ", "", text)
    except (TypeError, ValueError) as exc:
        return str(exc)
    if isinstance(instance, Consumer):
        instance.close()
    return None


def _consumer(settings: Settings) -> dict[str, Any]:
    return _plain(consumer_conf(settings.kafka))


def _producer(settings: Settings) -> dict[str, Any]:
    k = settings.kafka
    conf = transactional_producer_conf(k) if k.delivery == "exactly_once" else producer_conf(k)
    return _plain(conf) | _PRODUCER_GUARANTEES


def _alone(client: type[Consumer] | type[Producer], key: str, value: str) -> str | None:
    """librdkafka's words on one property by itself (group.id and the brokers stay the worker's:
    librdkafka aborts the process on an empty group.id)."""
    conf: dict[str, Any] = {key: value, "logger": _silent}
    conf.pop("bootstrap.servers", None)
    if client is Consumer:
        conf["group.id"] = "emotion-worker-check"
    return _refusal(client, conf)


def check_client_configs(settings: Settings) -> None:
    """Build the consumer's and the producer's librdkafka configuration and let librdkafka judge
    it. Raises ConfigError, one line per refused property:
    `config: kafka.common.foo.bar: librdkafka says: No such configuration property: "foo.bar"`
    (naming the file line or the environment variable the property came from)."""
    k = settings.kafka
    clients: list[tuple[type[Consumer] | type[Producer], dict[str, Any], tuple[str, ...]]] = [
        (Consumer, _consumer(settings), ("common", "consumer")),
        (Producer, _producer(settings), ("common", "producer")),
    ]
    problems: dict[Path_, str] = {}
    for client, conf, sections in clients:
        why = _refusal(client, conf)
        if why is None:
            continue
        # Each property alone: unknown names and bad values, one line each.
        for section in sections:
            for key, value in getattr(k, section).items():
                alone = _alone(client, key, value)
                if alone is not None:
                    problems.setdefault(("kafka", section, key), alone)
                    conf.pop(key, None)
        # Then the rest together: a combination refused blames the property or setting it names.
        why = _refusal(client, conf)
        if why is None:
            continue
        loc: Path_ = ("kafka",)
        named = [key for section in sections for key in getattr(k, section) if key in why]
        if named:
            loc = next(("kafka", s, named[0]) for s in sections if named[0] in getattr(k, s))
        else:
            mentioned = sorted((why.index(name), owned) for name, owned in _OWNED.items() if name in why)
            loc = mentioned[0][1] if mentioned else loc
        problems.setdefault(loc, why)
    if not problems:
        return
    secrets = [v for d in (k.common, k.consumer, k.producer) for key, v in d.items() if is_secret(key) and v]

    def masked(text: str) -> str:
        for secret in secrets:
            text = text.replace(secret, "***")
        return text

    origins = origins_of(settings)
    raise ConfigError("\n".join(config_line(loc, f"librdkafka says: {masked(why)}", origins)
                                for loc, why in problems.items()))
