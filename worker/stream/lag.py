"""Consumer lag per partition from librdkafka's statistics JSON."""

from __future__ import annotations

from collections.abc import Callable

import orjson

from worker.observe.metrics import Metrics


def parse_lag(stats_json: str, topic: str) -> dict[tuple[str, int], int]:
    try:
        stats = orjson.loads(stats_json)
    except orjson.JSONDecodeError:
        return {}
    out: dict[tuple[str, int], int] = {}
    partitions = stats.get("topics", {}).get(topic, {}).get("partitions", {})
    for key, part in partitions.items():
        pid = int(key)
        lag = part.get("consumer_lag", -1)  # against the committed offset
        if pid >= 0 and isinstance(lag, int) and lag >= 0:
            out[(topic, pid)] = lag
    return out


def lag_reporter(metrics: Metrics, topic: str) -> Callable[[str], None]:
    """For the consumer's stats_cb: the lag gauge per partition of the input topic."""

    def report(stats_json: str) -> None:
        for (t, partition), lag in parse_lag(stats_json, topic).items():
            metrics.lag.labels(topic=t, partition=str(partition)).set(lag)

    return report
