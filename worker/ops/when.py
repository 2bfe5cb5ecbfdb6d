"""Parse the replay's selection arguments (error classes, times, offsets), with errors that say
what was expected."""

from __future__ import annotations

import difflib
from datetime import UTC, datetime

from worker.errors import WorkerError
from worker.reasons import DEAD_LETTER_REASONS


def parse_error_classes(values: list[str]) -> frozenset[str]:
    """--error-class values, each one of the worker's dead-letter reasons."""
    for value in values:
        if value not in DEAD_LETTER_REASONS:
            close = difflib.get_close_matches(value, DEAD_LETTER_REASONS, n=1)
            hint = f"did you mean {close[0]}? " if close else ""
            raise WorkerError(f"--error-class {value!r} is not an error class: {hint}use one of "
                              f"{', '.join(DEAD_LETTER_REASONS)}")
    return frozenset(values)


def parse_window(since: str | None, until: str | None) -> tuple[int | None, int | None]:
    """--since and --until in epoch milliseconds; --since must come before --until."""
    start, end = parse_time(since), parse_time(until)
    if start is not None and end is not None and start >= end:
        raise WorkerError(f"--since {since} is not before --until {until}: nothing could be selected")
    return start, end


# Epoch milliseconds accepted: from 1973-03-03 (below, a number is more likely epoch seconds) to
# the end of year 9999 (what ISO 8601 can write).
EPOCH_MS_MIN = 100_000_000_000
EPOCH_MS_MAX = 253_402_300_799_999


def parse_time(value: str | None) -> int | None:
    """ISO 8601 (a time without zone is UTC) or epoch milliseconds -> epoch milliseconds."""
    if value is None:
        return None
    if value.isdigit():
        ms = int(value)
        if ms < EPOCH_MS_MIN:
            raise WorkerError(f"time {value!r} is before 1973 in epoch milliseconds; in epoch seconds use "
                              f"{value}000, or ISO 8601 (2026-12-01T10:00:00Z)")
        if ms > EPOCH_MS_MAX:
            raise WorkerError(f"time {value!r} is after year 9999 in epoch milliseconds: use epoch milliseconds "
                              "(13 digits) or ISO 8601 (2026-12-01T10:00:00Z)")
        return ms
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
