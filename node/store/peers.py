"""Replication state in SQLite: the origins held, cosignatures of checkpoints, fork evidence."""

from __future__ import annotations

import json
import sqlite3
from typing import Any

from node.store import logs as log_store
from node.store.sqlite import transaction


def frontier(conn: sqlite3.Connection, origins_max: int) -> list[tuple[bytes, int, str]]:
    """(origin key, checkpointed size, signed note) of every origin held, latest signed checkpoint each."""
    rows = conn.execute(
        "SELECT o.public_key, c.size, c.note FROM origins o JOIN checkpoints c ON c.origin = o.id"
        " WHERE c.size = (SELECT max(size) FROM checkpoints WHERE origin = o.id) ORDER BY o.id LIMIT ?",
        (origins_max,),
    ).fetchall()
    return [(bytes(k), s, n) for k, s, n in rows]


def held(conn: sqlite3.Connection, origin: bytes) -> tuple[int, int, str | None] | None:
    """(row id, stored size, latest signed note or None) of an origin, or None if not held."""
    row = log_store.origin_row(conn, origin)
    if row is None:
        return None
    cp = log_store.latest_checkpoint(conn, row[0])
    return row[0], row[1], cp.note if cp else None


def add_cosignature(conn: sqlite3.Connection, origin_id: int, size: int, witness: bytes, line: str, now_ms: int) -> bool:
    """Store a witness's cosignature line (the newest per witness and size wins); True if new."""
    with transaction(conn):
        cur = conn.execute(
            "INSERT OR REPLACE INTO cosignatures (origin, size, witness, line, received_ms) VALUES (?, ?, ?, ?, ?)",
            (origin_id, size, witness, line, now_ms),
        )
    return cur.rowcount > 0


def cosignatures(conn: sqlite3.Connection, origin_id: int, size: int) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT line FROM cosignatures WHERE origin = ? AND size = ? ORDER BY witness", (origin_id, size)
    ).fetchall()]


def anchored(conn: sqlite3.Connection, origin_id: int, quorum: int) -> tuple[int, str, list[str]] | None:
    """(size, note, cosignature lines) of the largest checkpoint with at least quorum cosignatures."""
    row = conn.execute(
        "SELECT c.size, c.note FROM checkpoints c WHERE c.origin = ? AND"
        " (SELECT count(*) FROM cosignatures w WHERE w.origin = c.origin AND w.size = c.size) >= ?"
        " ORDER BY c.size DESC LIMIT 1",
        (origin_id, quorum),
    ).fetchone()
    if row is None:
        return None
    return row[0], row[1], cosignatures(conn, origin_id, row[0])


def record_fork(conn: sqlite3.Connection, origin: bytes, now_ms: int, reported_by: str, evidence: dict[str, Any]) -> bool:
    """Keep the first evidence of a forked origin; True if it is new."""
    with transaction(conn):
        cur = conn.execute(
            "INSERT OR IGNORE INTO forks (origin, detected_ms, reported_by, evidence) VALUES (?, ?, ?, ?)",
            (origin, now_ms, reported_by, json.dumps(evidence, sort_keys=True)),
        )
    return cur.rowcount > 0


def forks(conn: sqlite3.Connection) -> list[dict[str, Any]]:
    return [
        {"origin": bytes(o).hex(), "detected_ms": t, "reported_by": r, "evidence": json.loads(e)}
        for o, t, r, e in conn.execute("SELECT origin, detected_ms, reported_by, evidence FROM forks ORDER BY detected_ms")
    ]


def forked_origins(conn: sqlite3.Connection) -> list[bytes]:
    return [bytes(r[0]) for r in conn.execute("SELECT origin FROM forks ORDER BY origin")]


def bytes_from(conn: sqlite3.Connection, origin_id: int, start: int) -> int:
    """Total envelope bytes at indexes ≥ start of an origin log."""
    row = conn.execute("SELECT coalesce(sum(length(envelope)), 0) FROM entries WHERE origin = ? AND idx >= ?",
                       (origin_id, start)).fetchone()
    return int(row[0])
