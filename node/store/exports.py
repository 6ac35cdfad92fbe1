"""What the exporters read from the ledger, and where the JetStream exporter keeps its positions.

`LogReader` is an exporter's own read-only connection on its own thread: it reads
committed entries only (WAL readers never see an open transaction), never takes the
writer, and never shares the API's reader pool, so exporting cannot slow admission.

`PositionFile` is a small SQLite file of its own beside the ledger
(`export-positions.sqlite`): the JetStream exporter saves there, after the server
acknowledged a batch, the next index to send of each origin log. It is not the
ledger file because saving a position must never queue behind (or block) the single
writer. (The PostgreSQL exporter keeps its positions in PostgreSQL, in the same
transaction as the rows.)
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from node.store import peers as peer_store
from node.store.sqlite import connect, transaction

T = TypeVar("T")


@dataclass(frozen=True)
class EntryRow:
    """One committed entry as stored: what an exporter turns into a row or a message."""

    index: int
    event_id: bytes
    signer: bytes
    kind: str
    ts: int
    envelope: bytes
    metrics: tuple[int, int, int, int]
    accepted_ms: int


@dataclass(frozen=True)
class CheckpointRow:
    size: int
    root: bytes
    note: str
    created_ms: int


class _OneThread:
    """A connection used only from its own single thread."""

    def __init__(self, name: str, opener: Callable[[], sqlite3.Connection]):
        self._pool = ThreadPoolExecutor(1, thread_name_prefix=name)
        self._opener = opener
        self._conn: sqlite3.Connection | None = None

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        def call() -> T:
            if self._conn is None:
                self._conn = self._opener()
            return fn(self._conn, *args)

        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    async def close(self) -> None:
        def close() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._pool, close)
        self._pool.shutdown(wait=True)


class LogReader(_OneThread):
    """An exporter's read-only view of the ledger file."""

    def __init__(self, path: str):
        super().__init__("ats-export-read", lambda: connect(path, readonly=True))

    async def origins(self) -> list[tuple[int, bytes, int]]:
        """(row id, public key, committed size) of every origin log held and not forked."""
        return await self.run(_origins)

    async def entries(self, origin_id: int, start: int, end: int) -> list[EntryRow]:
        return await self.run(_entries, origin_id, start, end)

    async def checkpoints(self, origin_id: int, low: int, high: int) -> list[CheckpointRow]:
        """Checkpoints of an origin with low <= size <= high."""
        return await self.run(_checkpoints, origin_id, low, high)

    async def batch(self, origin_id: int, start: int, end: int,
                    build: Callable[[list[EntryRow], Callable[[list[bytes]], list[tuple[int, int, bytes]]]], T],
                    ) -> tuple[list[EntryRow], T, list[CheckpointRow]]:
        """Entries [start, end), build(entries, held_elsewhere) and the checkpoints start <= size <= end of
        what was read, on the reader thread: reading and preparing a batch (decoding, JSON) stay off the
        event loop. held_elsewhere(ids) gives (origin row, index, event id) of those events in the other
        origin logs held."""
        def run(conn: sqlite3.Connection) -> tuple[list[EntryRow], T, list[CheckpointRow]]:
            rows = _entries(conn, origin_id, start, end)
            built = build(rows, lambda ids: _held_elsewhere(conn, origin_id, ids))
            return rows, built, _checkpoints(conn, origin_id, start, start + len(rows))

        return await self.run(run)


def _origins(conn: sqlite3.Connection) -> list[tuple[int, bytes, int]]:
    forked = set(peer_store.forked_origins(conn))
    rows = conn.execute("SELECT id, public_key, size FROM origins ORDER BY id").fetchall()
    return [(i, bytes(k), s) for i, k, s in rows if bytes(k) not in forked]


def _entries(conn: sqlite3.Connection, origin_id: int, start: int, end: int) -> list[EntryRow]:
    rows = conn.execute(
        "SELECT idx, event_id, signer, kind, ts, envelope, m0, m1, m2, m3, accepted_ms FROM entries"
        " WHERE origin = ? AND idx >= ? AND idx < ? ORDER BY idx",
        (origin_id, start, end),
    ).fetchall()
    return [EntryRow(r[0], r[1], r[2], r[3], r[4], r[5], (r[6], r[7], r[8], r[9]), r[10]) for r in rows]


def _checkpoints(conn: sqlite3.Connection, origin_id: int, low: int, high: int) -> list[CheckpointRow]:
    rows = conn.execute(
        "SELECT size, root, note, created_ms FROM checkpoints WHERE origin = ? AND size >= ? AND size <= ?"
        " ORDER BY size",
        (origin_id, low, high),
    ).fetchall()
    return [CheckpointRow(*r) for r in rows]


def _held_elsewhere(conn: sqlite3.Connection, origin_id: int, ids: list[bytes]) -> list[tuple[int, int, bytes]]:
    out: list[tuple[int, int, bytes]] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        out.extend(conn.execute(
            f"SELECT origin, idx, event_id FROM entries WHERE event_id IN ({marks}) AND origin != ?",
            (*chunk, origin_id),
        ).fetchall())
    return out


POSITIONS_SCHEMA = """
CREATE TABLE IF NOT EXISTS positions (
    sink TEXT NOT NULL,
    origin BLOB NOT NULL,
    next_index INTEGER NOT NULL,
    PRIMARY KEY (sink, origin)
) WITHOUT ROWID
"""


def _open_positions(path: str) -> sqlite3.Connection:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    conn = connect(path, synchronous="normal")
    conn.execute(POSITIONS_SCHEMA)
    return conn


class PositionFile(_OneThread):
    """Next index to export per (sink, origin), in a file of its own (see the module docstring)."""

    def __init__(self, path: str):
        super().__init__("ats-export-pos", lambda: _open_positions(path))

    async def load(self, sink: str) -> dict[bytes, int]:
        return await self.run(lambda c: {bytes(o): n for o, n in c.execute(
            "SELECT origin, next_index FROM positions WHERE sink = ?", (sink,)).fetchall()})

    async def save(self, sink: str, origin: bytes, next_index: int) -> None:
        def save(conn: sqlite3.Connection) -> None:
            with transaction(conn):
                conn.execute(
                    "INSERT INTO positions (sink, origin, next_index) VALUES (?, ?, ?) ON CONFLICT (sink, origin)"
                    " DO UPDATE SET next_index = max(next_index, excluded.next_index)",
                    (sink, origin, next_index),
                )

        await self.run(save)
