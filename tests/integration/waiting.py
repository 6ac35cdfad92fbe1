"""Bounded waits of the integration tests: poll until a condition holds, or fail saying what for."""

from __future__ import annotations

import time
from typing import Callable, TypeVar

T = TypeVar("T")


def wait_until(what: str, fn: Callable[[], T], timeout_s: float, interval_s: float = 0.2) -> T:
    """fn()'s first truthy value, polled every interval_s; AssertionError after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"timed out waiting for {what}")
