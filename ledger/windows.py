"""Usage windows aligned to UTC calendar boundaries.

An event counts in the window that holds its own `ts`, so every node that
holds the same events puts them in the same windows, and nothing is lost or
counted twice at a reset. Weeks start on Monday 00:00 UTC (ISO 8601).
"""

from __future__ import annotations

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
# 1970-01-01 was a Thursday, so the Monday before it is 3 days earlier.
_WEEK_OFFSET_MS = 3 * DAY_MS

WINDOWS = ("minute", "hour", "day", "week")


def window_bounds(window: str, ts_ms: int) -> tuple[int, int]:
    """[start, end) in ms of the window of this name that holds ts_ms."""
    if window == "minute":
        start = ts_ms - ts_ms % MINUTE_MS
        return start, start + MINUTE_MS
    if window == "hour":
        start = ts_ms - ts_ms % HOUR_MS
        return start, start + HOUR_MS
    if window == "day":
        start = ts_ms - ts_ms % DAY_MS
        return start, start + DAY_MS
    if window == "week":
        start = ts_ms - (ts_ms + _WEEK_OFFSET_MS) % WEEK_MS
        return start, start + WEEK_MS
    raise ValueError(f"unknown window {window!r}")
