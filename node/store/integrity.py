"""Reads for the integrity checks (node/verifydb.py, the node's start-up check): every stored column
that is derived from the signed envelopes, read back raw so that the checks can recompute it."""

from __future__ import annotations

import sqlite3
from typing import Iterator

ENTRY_COLUMNS = ("event_id", "signer", "kind", "ts", "m0", "m1", "m2", "m3", "subject")


def entry_rows(conn: sqlite3.Connection, origin: int, start: int, end: int) -> list[tuple]:
    """(idx, envelope, *ENTRY_COLUMNS) of the entries of an origin at [start, end), in order."""
    return conn.execute(
        f"SELECT idx, envelope, {', '.join(ENTRY_COLUMNS)} FROM entries WHERE origin = ? AND idx >= ? AND idx < ?"
        " ORDER BY idx",
        (origin, start, end),
    ).fetchall()


def entry_rows_at(conn: sqlite3.Connection, origin: int, indexes: list[int]) -> list[tuple]:
    """entry_rows for the given indexes (at most 500), in index order."""
    marks = ",".join("?" * len(indexes))
    return conn.execute(
        f"SELECT idx, envelope, {', '.join(ENTRY_COLUMNS)} FROM entries WHERE origin = ? AND idx IN ({marks})"
        " ORDER BY idx",
        (origin, *indexes),
    ).fetchall()


def entries_from(conn: sqlite3.Connection, origin: int, start: int) -> int:
    """How many entries of the origin have an index >= start."""
    return conn.execute("SELECT count(*) FROM entries WHERE origin = ? AND idx >= ?", (origin, start)).fetchone()[0]


def stored_hashes(conn: sqlite3.Connection, origin: int, first: int, end: int) -> dict[int, bytes]:
    """{sidx: hash} of the origin's stored tree hashes with first <= sidx < end."""
    return dict(conn.execute(
        "SELECT sidx, hash FROM tree_hashes WHERE origin = ? AND sidx >= ? AND sidx < ?", (origin, first, end)
    ).fetchall())


def hashes_from(conn: sqlite3.Connection, origin: int, first: int) -> list[int]:
    """Stored indexes >= first of the origin (a log of n leaves stores exactly 2n - popcount(n)); at most 20."""
    return [r[0] for r in conn.execute(
        "SELECT sidx FROM tree_hashes WHERE origin = ? AND sidx >= ? ORDER BY sidx LIMIT 20", (origin, first)
    ).fetchall()]


def checkpoint_rows(conn: sqlite3.Connection, origin: int, low: int, high: int | None) -> list[tuple[int, bytes, str]]:
    """(size, root, note) of the origin's checkpoints with low <= size <= high (None: no bound), by size."""
    return conn.execute(
        "SELECT size, root, note FROM checkpoints WHERE origin = ? AND size >= ? AND size <= ? ORDER BY size",
        (origin, low, 2**63 - 1 if high is None else high),
    ).fetchall()


def cosignature_rows(conn: sqlite3.Connection, origin: int) -> list[tuple[int, bytes, str, str | None]]:
    """(size, witness, line, the checkpoint note at that size or None) of every cosignature of the origin."""
    return conn.execute(
        "SELECT w.size, w.witness, w.line, c.note FROM cosignatures w LEFT JOIN checkpoints c"
        " ON c.origin = w.origin AND c.size = w.size WHERE w.origin = ? ORDER BY w.size, w.witness",
        (origin,),
    ).fetchall()


def entry_count(conn: sqlite3.Connection) -> int:
    return conn.execute("SELECT count(*) FROM entries").fetchone()[0]


def repeated_ids(conn: sqlite3.Connection) -> set[bytes]:
    """Event ids held in more than one origin log (an index-only scan)."""
    return {r[0] for r in conn.execute("SELECT event_id FROM entries GROUP BY event_id HAVING count(*) > 1")}


def entries_by_arrival(conn: sqlite3.Connection, batch: int = 5000) -> Iterator[list[tuple[int, bytes, bytes]]]:
    """(origin, event_id, envelope) of every entry in the order this node stored them: by the time it
    accepted them, then origin and index (each origin's own order), in lists of at most `batch`."""
    cur = conn.execute("SELECT origin, event_id, envelope FROM entries ORDER BY accepted_ms, origin, idx")
    while True:
        rows = cur.fetchmany(batch)
        if not rows:
            return
        yield rows


def all_counters(conn: sqlite3.Connection) -> dict[tuple[str, str, str, str, int], int]:
    """Every usage counter: {(scope, scope_id, metric, window, start_ms): amount}."""
    return {
        (s, i, m, w, t): a
        for s, i, m, w, t, a in conn.execute(
            "SELECT scope, scope_id, metric, window, start_ms, amount FROM usage_counters"
        )
    }


def counters_since(conn: sqlite3.Connection, start_ms: int) -> dict[tuple[str, str, str, str, int], int]:
    """The usage counters of windows starting at or after start_ms."""
    return {
        (s, i, m, w, t): a
        for s, i, m, w, t, a in conn.execute(
            "SELECT scope, scope_id, metric, window, start_ms, amount FROM usage_counters WHERE start_ms >= ?",
            (start_ms,),
        )
    }
