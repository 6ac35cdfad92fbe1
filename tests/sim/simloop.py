"""An asyncio event loop on virtual time, for deterministic simulation.

The loop never waits: when nothing is ready, it jumps its clock to the next
timer. There is no I/O and no thread: `run_in_executor` runs the function
inline. So a simulation's order of events depends on nothing but the code and
its seeds, and a minute of cluster time passes in milliseconds.
"""

from __future__ import annotations

import asyncio
from typing import Any, Callable

EPOCH_MS = 1_795_000_000_000  # virtual time 0 (2026-11-19T07:06:40Z): windows, skew and ts all see this


class Stalled(RuntimeError):
    """Nothing is ready and no timer is set: every task waits for something that never comes."""


class _VirtualSelector:
    def __init__(self, loop: "SimLoop"):
        self._loop = loop

    def select(self, timeout: float | None) -> list:
        if timeout is None:
            raise Stalled("simulation stalled: no ready callback and no timer")
        if timeout > 0:
            self._loop.advance(timeout)
        return []

    def close(self) -> None:
        pass


class SimLoop(asyncio.BaseEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self._now = 0.0
        self._selector = _VirtualSelector(self)

    def time(self) -> float:
        return self._now

    def advance(self, seconds: float) -> None:
        self._now += seconds

    def _process_events(self, event_list: list) -> None:
        pass

    def _write_to_self(self) -> None:
        pass

    def run_in_executor(self, executor: Any, func: Callable, *args: Any) -> asyncio.Future:
        fut = self.create_future()
        try:
            fut.set_result(func(*args))
        except BaseException as e:  # noqa: BLE001 - delivered to the awaiting coroutine
            fut.set_exception(e)
        return fut

    def close(self) -> None:
        if not self.is_closed():
            super().close()


class SimClock:
    """node.clock.SystemClock's interface on the loop's virtual time."""

    def __init__(self, loop: SimLoop):
        self._loop = loop

    def now_ms(self) -> int:
        return EPOCH_MS + int(self._loop.time() * 1000)

    def monotonic_ms(self) -> float:
        return self._loop.time() * 1000

    def monotonic_s(self) -> float:
        return self._loop.time()
