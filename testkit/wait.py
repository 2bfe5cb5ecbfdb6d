"""Waiting for a condition instead of sleeping for a fixed time: returns as soon as it holds."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(condition: Callable[[], T], timeout: float, interval: float = 0.05) -> T:
    """Evaluate `condition` every `interval` s until it is truthy or `timeout` s have passed; return
    its last value, so callers keep their own assertion: `assert wait_until(ready, 30), "why"`."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value or time.monotonic() >= deadline:
            return value
        time.sleep(interval)
