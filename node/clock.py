"""The only code that reads the clock (P2): everything else takes `now_ms`."""

from __future__ import annotations

import time


class SystemClock:
    """Wall-clock ms since the Unix epoch, and a monotonic ms counter."""

    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000

    def monotonic_ms(self) -> float:
        return time.monotonic_ns() / 1_000_000

    def monotonic_s(self) -> float:
        return time.monotonic()

    def sleep_s(self, seconds: float) -> None:
        """Block this thread (the task meter's sampling loop; never on the event loop)."""
        time.sleep(seconds)
