"""The exporter loop shared by every sink: committed entries out, position per origin log, backoff.

Theory of operation. One `Exporter` per configured sink runs as a background task.
It never touches the writer: the committer (and the replicator, for logs fetched
from peers) only *wakes* it after a commit, and it reads the committed entries with
its own read-only connection (`node.store.exports.LogReader`). Each round it lists
the origin logs it exports (this node's own, or with `export_origins = "all"` every
origin held and not forked), and for each one behind its position it reads at most
`BATCH_EVENTS_MAX` entries from the position on, turns them into `Record`s and
hands them to the sink together with the origin's signed checkpoints in that range.

The sink owns "effectively once": `deliver` either makes the whole batch durable and
returns the new position, or raises, and then nothing is assumed. PostgreSQL moves
its position in the same transaction as the rows; JetStream saves it only after the
server acknowledged every message (see each sink). After any failure the loop
closes the sink, waits (exponential backoff with jitter, `export_retry_ms_max` at
most) and opens it again, which re-reads the positions *from the sink*: the loop
never trusts its memory across a failure.

While a sink is down the node keeps admitting events: only the backlog grows. Its
size, age, errors and rate are metrics (`ats_export_*`), shown on the dashboard,
and crossing `export_alert_events` or `export_alert_ms` raises an
`export_backlog` alert (webhooks, like budget alerts).
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from typing import Any, Callable, Protocol

from node.aio import cancel_and_wait
from node.clock import SystemClock
from node.export.records import Record, record
from node.store.exports import CheckpointRow, EntryRow, LogReader, PositionFile

logger = logging.getLogger("ats.export")

BATCH_EVENTS_MAX = 2000  # entries per delivery: one transaction, or one window of in-flight messages
BATCHES_PER_ROUND = 16  # then the next origin log gets its turn
BACKOFF_MS_FIRST = 100
IDLE_POLL_MS = 1000  # safety net only: commits wake the loop at once
RATE_WINDOW_MS = 10_000
FAILURE_LOG_MS = 60_000  # a sink that stays down is logged again at most this often


class Sink(Protocol):
    name: str
    dedupes_ids: bool  # does the sink itself absorb an event id delivered twice (from two origin logs)?

    async def open(self) -> None:
        """Connect and prepare (create the tables or the stream if missing)."""

    async def position(self, origin: bytes) -> int:
        """The next index of origin's log to export, as the sink knows it (0 if none)."""

    def prepare(self, records: list[Record]) -> Any:
        """What deliver sends, built on the reader thread (pure CPU: encoding, JSON)."""

    async def deliver(self, origin: bytes, start: int, end: int, prepared: Any,
                      checkpoints: list[CheckpointRow]) -> int:
        """Make entries [start, end) of origin durable (prepared: from prepare); returns the new position."""

    async def close(self) -> None: ...


class Exporter:
    """One sink's loop; see the module docstring."""

    def __init__(self, sink: Sink, reader: LogReader, positions: PositionFile, clock: SystemClock, *,
                 own_key: bytes, own_size: Callable[[], int], origins: str, scopes: Callable[[bytes], dict[str, str]],
                 retry_ms_max: int, alert_events: int, alert_ms: int,
                 on_alert: Callable[[list[dict[str, Any]]], None] | None = None, rng: random.Random | None = None):
        self.sink, self._reader, self._file, self._clock = sink, reader, positions, clock
        self._own_key, self._own_size, self._all = own_key, own_size, origins == "all"
        self._scopes, self._retry_ms_max = scopes, retry_ms_max
        self._alert_events, self._alert_ms, self._on_alert = alert_events, alert_ms, on_alert
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._positions: dict[bytes, int] | None = None  # the sink's, valid until a failure
        self._hint: dict[bytes, int] = {}  # last known positions (for metrics while the sink is down)
        self._sizes: dict[bytes, int] = {}
        self._oldest_ms: dict[bytes, int] = {}  # accepted_ms of the first entry not yet exported, per origin
        self._recent: deque[tuple[float, int]] = deque()
        self._last_failure_log = -FAILURE_LOG_MS
        self.exported = 0
        self.errors = 0
        self.up = False
        self.last_error = ""
        self.alerting = False

    # -- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"ats-export-{self.sink.name}")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        await self._close_sink()

    def wake(self) -> None:
        """Called on the event loop after a commit: never blocks."""
        self._wake.set()

    # -- the loop -------------------------------------------------------------------------------

    async def _run(self) -> None:
        self._hint = await self._file.load(self.sink.name)
        backoff = BACKOFF_MS_FIRST
        while True:
            try:
                if self._positions is None:
                    await self.sink.open()
                    self._positions = {}
                    self.up = True
                    self.last_error = ""
                progressed = await self._round()
                backoff = BACKOFF_MS_FIRST
                self._check_alert()
                if not progressed:
                    try:
                        await asyncio.wait_for(self._wake.wait(), IDLE_POLL_MS / 1000)
                    except asyncio.TimeoutError:
                        pass
            except asyncio.CancelledError:
                raise
            except Exception as e:  # any sink or network failure: back off, reopen, re-read positions
                await self._failed(e)
                delay = backoff * (0.5 + self._rng.random())
                backoff = min(self._retry_ms_max, backoff * 2)
                await asyncio.sleep(delay / 1000)

    async def _failed(self, e: Exception) -> None:
        self.errors += 1
        self.up = False
        self.last_error = f"{type(e).__name__}: {e}"[:300]
        self._positions = None
        now = self._clock.monotonic_ms()
        if now - self._last_failure_log >= FAILURE_LOG_MS:
            self._last_failure_log = now
            logger.warning("export to %s failed (the backlog is kept and retried): %s", self.sink.name, self.last_error)
        await self._close_sink()
        try:
            await self._note_oldest()
        except Exception:  # the ledger file is ours: if even it fails, the metrics just stay as they were
            pass
        self._check_alert()

    async def _close_sink(self) -> None:
        try:
            await self.sink.close()
        except Exception:
            pass

    async def _round(self) -> bool:
        """Up to BATCHES_PER_ROUND batches per origin log behind its position; True if anything moved."""
        self._wake.clear()
        assert self._positions is not None
        origins = [o for o in await self._reader.origins() if self._all or o[1] == self._own_key]
        for _origin_id, key, _size in origins:  # every position first: the all-origins filter reads them
            if key not in self._positions:
                self._positions[key] = await self.sink.position(key)
                self._hint[key] = self._positions[key]
        keys = {row: key for row, key, _size in origins}
        progressed = False
        for origin_id, key, size in origins:
            self._sizes[key] = size
            if self._positions[key] >= size:
                self._oldest_ms.pop(key, None)
                continue
            progressed = await self._export_origin(origin_id, key, size, keys) or progressed
        return progressed

    async def _export_origin(self, origin_id: int, key: bytes, size: int, keys: dict[int, bytes]) -> bool:
        """Batches of one origin up to size; the next batch is read and prepared while this one is delivered."""
        assert self._positions is not None
        pos = self._positions[key]
        batch = await self._read(origin_id, key, pos, size, keys)
        for _ in range(BATCHES_PER_ROUND):
            end, prepared, checkpoints, first_ms = batch
            if end == pos:
                return False
            self._oldest_ms[key] = first_ms
            ahead = asyncio.create_task(self._read(origin_id, key, end, size, keys)) if end < size else None
            try:
                new = await self.sink.deliver(key, pos, end, prepared, checkpoints)
            except BaseException:
                await cancel_and_wait(ahead)
                raise
            self._positions[key] = new
            self._hint[key] = new
            await self._file.save(self.sink.name, key, new)
            self._count(max(0, new - pos))
            if new >= size:
                self._oldest_ms.pop(key, None)
            if ahead is None or new != end:  # caught up, or another exporter moved the position: re-plan
                await cancel_and_wait(ahead)
                return new != pos
            pos = new
            batch = await ahead
        return True

    async def _read(self, origin_id: int, key: bytes, start: int, size: int,
                    keys: dict[int, bytes]) -> tuple[int, Any, list[CheckpointRow], int]:
        """(end, prepared, checkpoints, accepted_ms of the first entry) of the batch from start on."""
        assert self._positions is not None
        positions = dict(self._positions)
        filter_sent = self._all and not self.sink.dedupes_ids
        scopes, prepare = self._scopes, self.sink.prepare

        def build(rows: list[EntryRow], held_elsewhere: Callable[[list[bytes]], list[tuple[int, int, bytes]]]) -> Any:
            records = [record(key, row, scopes(row.signer)) for row in rows]
            if filter_sent and records:
                # an event already sent from another origin log (before that log's position) is not sent again
                sent = {bytes(eid) for other, idx, eid in held_elsewhere([r.event_id for r in records])
                        if other in keys and idx < positions.get(keys[other], 0)}
                records = [r for r in records if r.event_id not in sent]
            return prepare(records)

        rows, prepared, checkpoints = await self._reader.batch(origin_id, start, min(size, start + BATCH_EVENTS_MAX),
                                                               build)
        return start + len(rows), prepared, checkpoints, rows[0].accepted_ms if rows else 0

    async def _note_oldest(self) -> None:
        """While the sink is down: the age of the oldest entry not exported, from the last known positions."""
        for origin_id, key, size in await self._reader.origins():
            if not self._all and key != self._own_key:
                continue
            self._sizes[key] = size
            pos = self._hint.get(key, 0)
            if pos < size and key not in self._oldest_ms:
                rows = await self._reader.entries(origin_id, pos, pos + 1)
                if rows:
                    self._oldest_ms[key] = rows[0].accepted_ms

    # -- what the metrics, the dashboard and the alert read -----------------------------------------

    def _count(self, n: int) -> None:
        self.exported += n
        now = self._clock.monotonic_ms()
        self._recent.append((now, n))
        while self._recent and self._recent[0][0] < now - RATE_WINDOW_MS:
            self._recent.popleft()

    def rate(self) -> float:
        """Entries exported per second over the last RATE_WINDOW_MS."""
        now = self._clock.monotonic_ms()
        return sum(n for t, n in self._recent if t >= now - RATE_WINDOW_MS) / (RATE_WINDOW_MS / 1000)

    def backlog(self) -> int:
        """Committed entries not yet exported (from the last known positions)."""
        known = {**self._hint, **(self._positions or {})}  # the sink's own while connected
        sizes = dict(self._sizes)
        sizes[self._own_key] = max(sizes.get(self._own_key, 0), self._own_size())
        return sum(max(0, size - known.get(k, 0)) for k, size in sizes.items() if self._all or k == self._own_key)

    def age_ms(self) -> int:
        """How long the oldest entry not yet exported has waited (0 when caught up)."""
        if not self._oldest_ms or self.backlog() == 0:
            return 0
        return max(0, self._clock.now_ms() - min(self._oldest_ms.values()))

    def view(self) -> dict[str, Any]:
        return {"sink": self.sink.name, "up": self.up, "backlog_events": self.backlog(), "backlog_age_ms": self.age_ms(),
                "exported_events": self.exported, "errors": self.errors, "rate_events_per_s": round(self.rate(), 1),
                "last_error": self.last_error, "alerting": self.alerting, "origins": "all" if self._all else "own"}

    def _check_alert(self) -> None:
        backlog, age = self.backlog(), self.age_ms()
        over = backlog >= self._alert_events or age >= self._alert_ms
        if over and not self.alerting:
            self.alerting = True
            logger.warning("export to %s: backlog of %d events, oldest %d ms", self.sink.name, backlog, age)
            self._send_alert("export_backlog", backlog, age)
        elif self.alerting and backlog == 0:
            self.alerting = False
            self._send_alert("export_caught_up", backlog, age)

    def _send_alert(self, type_: str, backlog: int, age: int) -> None:
        if self._on_alert is None:
            return
        detail = {"sink": self.sink.name, "backlog_events": backlog, "backlog_age_ms": age,
                  "threshold_events": self._alert_events, "threshold_ms": self._alert_ms, "last_error": self.last_error}
        self._on_alert([{"type": type_, "scope": "node", "scope_id": self._own_key.hex(),
                         "metric": f"export.{self.sink.name}", "ts_ms": self._clock.now_ms(), "detail": detail}])
