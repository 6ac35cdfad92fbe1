"""Usage windows aligned to UTC calendar boundaries (or a named time zone's).

An event counts in the window that holds its own `ts`, so every node that
holds the same events puts them in the same windows, and nothing is lost or
counted twice at a reset. Weeks start on Monday 00:00 UTC (ISO 8601).

Owner budgets (ledger/scoped.py) add the calendar month, and calendar windows
(day, week, month) in a named IANA time zone, written `month@Europe/Paris`:
the zone's local midnight bounds them, so a day can last 23 or 25 hours. The
zone rules come from the tz database (Debian's tzdata, or the `tzdata` wheel),
the same on every node that runs the same database version.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

MINUTE_MS = 60_000
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS
WEEK_MS = 7 * DAY_MS
# 1970-01-01 was a Thursday, so the Monday before it is 3 days earlier.
_WEEK_OFFSET_MS = 3 * DAY_MS

WINDOWS = ("minute", "hour", "day", "week")
CALENDAR_WINDOWS = ("day", "week", "month")  # the windows a time zone may bound
OWNER_WINDOWS = ("hour", "day", "week", "month")  # the windows an owner budget may use


def window_bounds(window: str, ts_ms: int) -> tuple[int, int]:
    """[start, end) in ms of the window of this name that holds ts_ms."""
    if "@" in window or window == "month":
        return _calendar_bounds(window, ts_ms)
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


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo | None:
    """The IANA zone of this name, or None if the tz database has none."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def valid_window(window: str) -> bool:
    """Whether `window` is an owner budget window: OWNER_WINDOWS, or CALENDAR_WINDOWS@zone."""
    base, _, tz = window.partition("@")
    if not tz:
        return base in OWNER_WINDOWS
    return base in CALENDAR_WINDOWS and zone(tz) is not None


_recent: dict[str, list[tuple[int, int]]] = {}  # window -> the last few bounds computed (this one, the previous)
_RECENT_MAX = 4


def _calendar_bounds(window: str, ts_ms: int) -> tuple[int, int]:
    recent = _recent.setdefault(window, [])
    for bounds in recent:
        if bounds[0] <= ts_ms < bounds[1]:
            return bounds
    base, _, tz = window.partition("@")
    tzinfo = zone(tz) if tz else timezone.utc
    if tzinfo is None:
        raise ValueError(f"unknown time zone {tz!r}")
    local = datetime.fromtimestamp(ts_ms // 1000, tzinfo)
    if base == "day":
        start, end = local.date(), local.date() + timedelta(days=1)
    elif base == "week":
        start = local.date() - timedelta(days=local.weekday())
        end = start + timedelta(days=7)
    elif base == "month":
        start = local.date().replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
    else:
        raise ValueError(f"unknown window {window!r}")
    bounds = (_midnight_ms(start, tzinfo), _midnight_ms(end, tzinfo))
    recent.insert(0, bounds)
    del recent[_RECENT_MAX:]
    return bounds


def _midnight_ms(day, tzinfo) -> int:  # type: ignore[no-untyped-def]
    return int(datetime(day.year, day.month, day.day, tzinfo=tzinfo).timestamp()) * 1000
