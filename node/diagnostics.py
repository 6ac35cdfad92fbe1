"""Diagnostics (process logging) setup. Not named "log": that word means the Merkle log.

Every record goes through `RepeatLimiter`: per class of message (logger, level,
message template, exception type), at most `repeats_max` records per period;
the first record of the next period that passes says how many were dropped.
A flood of one failure (a node out of file descriptors logged 65,000
tracebacks in 20 s, issue 10 class 6) becomes a few lines per period, and
other messages still get through. Bounded: at most `CLASSES_MAX` classes are
tracked; past that the table is cleared (at worst a few more lines pass).
"""

from __future__ import annotations

import logging
import sys

CLASSES_MAX = 1024


class RepeatLimiter(logging.Filter):
    """A logging filter: at most repeats_max records of each class per period_ms."""

    def __init__(self, repeats_max: int, period_ms: int):
        super().__init__()
        self.repeats_max, self.period_s = repeats_max, period_ms / 1000
        self._classes: dict[tuple, list] = {}  # class -> [period start (s), passed, dropped]

    def filter(self, record: logging.LogRecord) -> bool:
        if self.repeats_max <= 0:
            return True
        exc = record.exc_info[0].__name__ if record.exc_info and record.exc_info[0] else ""
        key = (record.name, record.levelno, str(record.msg), exc)
        now = record.created  # set by logging when the record was made: no clock read here
        state = self._classes.get(key)
        if state is None:
            if len(self._classes) >= CLASSES_MAX:
                self._classes.clear()
            state = self._classes[key] = [now, 0, 0]
        if now - state[0] >= self.period_s:
            dropped = state[2]
            state[:] = [now, 0, 0]
            if dropped:
                record.msg = f"{record.msg} [{dropped} more like this dropped in the last {self.period_s:g} s]"
        if state[1] >= self.repeats_max:
            state[2] += 1
            return False
        state[1] += 1
        return True


def setup(level: str, repeats_max: int = 5, period_ms: int = 10_000) -> None:
    logging.basicConfig(
        stream=sys.stderr,
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, RepeatLimiter) for f in handler.filters):
            handler.addFilter(RepeatLimiter(repeats_max, period_ms))
