"""Admission rules that need no storage: the clock-skew window (PROTOCOL.md §3).

Replays are caught by id in the store: an id already held is answered with
its stored receipt, never counted twice.
"""

from __future__ import annotations

from ledger.errors import Conflict


def check_timestamp(ts_ms: int, now_ms: int, skew_ms: int) -> None:
    """Accept ts_ms only within ±skew_ms of now_ms; raises Conflict."""
    if ts_ms < now_ms - skew_ms:
        raise Conflict(
            "stale_timestamp",
            f"event ts is {now_ms - ts_ms} ms behind this node's clock (skew allowed: {skew_ms} ms)",
        )
    if ts_ms > now_ms + skew_ms:
        raise Conflict(
            "future_timestamp",
            f"event ts is {ts_ms - now_ms} ms ahead of this node's clock (skew allowed: {skew_ms} ms)",
        )
