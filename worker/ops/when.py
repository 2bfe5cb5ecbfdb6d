"""Parse the replay's time and offset arguments, with errors that say what was expected."""

from __future__ import annotations

from datetime import UTC, datetime

from worker.errors import WorkerError


def parse_time(value: str | None) -> int | None:
    """ISO 8601 (a time without zone is UTC) or epoch milliseconds -> epoch milliseconds."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        raise WorkerError(f"time {value!r}: use ISO 8601 (2026-12-01T10:00:00Z) or epoch milliseconds") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def parse_offsets(values: list[str]) -> dict[int, int]:
    """["0:120", "2:7"] -> {0: 120, 2: 7}."""
    out: dict[int, int] = {}
    for value in values:
        partition, sep, offset = value.partition(":")
        if not sep or not partition.isdigit() or not offset.isdigit():
            raise WorkerError(f"--from-offset {value!r}: use PARTITION:OFFSET, e.g. 0:120")
        out[int(partition)] = int(offset)
    return out
