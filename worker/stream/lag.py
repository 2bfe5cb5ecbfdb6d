"""Consumer lag per partition from librdkafka's statistics JSON."""

from __future__ import annotations

import orjson


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
