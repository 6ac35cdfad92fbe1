"""Origin logs in SQLite: entries, their Merkle hashes and checkpoints.

`append_batch` is the one write path for a batch of new events: entries,
stored tree hashes, the origin's size and the signed checkpoint go into one
`BEGIN IMMEDIATE` transaction, so an acknowledged event is durable together
with the tree that proves it, and a failed batch leaves nothing behind.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Callable, Sequence

from ledger.constants import SUM_SPLIT_BITS
from ledger.errors import check
from ledger.events import Envelope, Event
from ledger.merkle import Frontier, leaf_hash
from node.store import merkle as merkle_store
from node.store.sqlite import transaction


@dataclass(frozen=True)
class StoredEntry:
    origin: bytes  # origin public key
    index: int
    event_id: bytes
    envelope: bytes
    accepted_ms: int
    budgets: bytes | None  # the receipt's budgets, packed (node/receipts.py)


@dataclass(frozen=True)
class StoredCheckpoint:
    origin: bytes
    size: int
    root: bytes
    note: str
    created_ms: int


def ensure_origin(conn: sqlite3.Connection, public_key: bytes) -> tuple[int, int]:
    """The (row id, size) of an origin log, creating an empty one if needed."""
    row = conn.execute("SELECT id, size FROM origins WHERE public_key = ?", (public_key,)).fetchone()
    if row:
        return row[0], row[1]
    with transaction(conn):
        cur = conn.execute("INSERT INTO origins (public_key, size) VALUES (?, 0)", (public_key,))
    return cur.lastrowid, 0


def origin_row(conn: sqlite3.Connection, public_key: bytes) -> tuple[int, int] | None:
    """(row id, size) of the origin with this key, or None."""
    row = conn.execute("SELECT id, size FROM origins WHERE public_key = ?", (public_key,)).fetchone()
    return (row[0], row[1]) if row else None


def list_origins(conn: sqlite3.Connection) -> list[tuple[int, bytes, int]]:
    return conn.execute("SELECT id, public_key, size FROM origins ORDER BY id").fetchall()


def find_entries(conn: sqlite3.Connection, ids: Sequence[bytes]) -> dict[bytes, StoredEntry]:
    """Stored entries for the ids held (any origin; the lowest origin row first)."""
    found: dict[bytes, StoredEntry] = {}
    unique = list(dict.fromkeys(ids))
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"SELECT e.event_id, o.public_key, e.idx, e.envelope, e.accepted_ms, e.budgets"
            f" FROM entries e JOIN origins o ON o.id = e.origin"
            f" WHERE e.event_id IN ({marks}) ORDER BY e.origin",
            chunk,
        ).fetchall()
        for event_id, origin, idx, envelope, accepted_ms, budgets in rows:
            found.setdefault(event_id, StoredEntry(origin, idx, event_id, envelope, accepted_ms, budgets))
    return found


def subject_of(ev: Event) -> bytes | None:
    """Who an entry is about, for lookups: a TRT's subject, a policy record's agent."""
    body = ev.body
    subject = getattr(body, "subject", None) or getattr(body, "agent", None)
    return subject if isinstance(subject, bytes) else None


def append_batch(
    conn: sqlite3.Connection,
    origin_id: int,
    frontier: Frontier,
    envelopes: Sequence[Envelope],
    now_ms: int,
    sign: Callable[[int, bytes], str] | None,
    *,
    receipts: Sequence[bytes | None] | None = None,
    also: Callable[[sqlite3.Connection], None] | None = None,
) -> tuple[Frontier, str]:
    """Append envelopes (already checked, none held) and a checkpoint, in one transaction.

    `sign(size, root)` returns the signed checkpoint note; `receipts` holds each
    envelope's stored receipt extras (JSON) and `also(conn)` writes whatever else
    belongs to the same transaction (budget counters, alerts). Works on a copy of
    the frontier: returns (the advanced frontier, the checkpoint note); on any
    failure the transaction rolls back and the caller's frontier is unchanged.
    """
    work = frontier.copy()
    start = work.size
    rows = []
    leaves = []
    for offset, env in enumerate(envelopes):
        ev = env.event
        m = ev.body.metrics() + (0, 0, 0, 0)
        extra = receipts[offset] if receipts else None
        rows.append((origin_id, start + offset, ev.id, ev.signer, ev.kind, ev.ts, env.raw, m[0], m[1], m[2], m[3],
                     now_ms, extra, subject_of(ev)))
        leaves.append(leaf_hash(env.raw))
    with transaction(conn):
        conn.executemany(
            "INSERT INTO entries (origin, idx, event_id, signer, kind, ts, envelope, m0, m1, m2, m3, accepted_ms,"
            " budgets, subject) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows,
        )
        if also is not None:
            also(conn)
        merkle_store.append_leaves(conn, origin_id, work, leaves)
        size = work.size
        root = work.root()
        # P4: the hashes just stored must give the same root as the frontier.
        check(merkle_store.tree_hash_at(conn, origin_id, size) == root, "stored tree hash equals frontier root")
        cur = conn.execute("UPDATE origins SET size = ? WHERE id = ? AND size = ?", (size, origin_id, start))
        check(cur.rowcount == 1, "origin size advanced from the frontier's size")
        note = sign(size, root) if sign is not None else ""
        if note:  # a replicated range may end between two of the origin's signed checkpoints
            conn.execute(
                "INSERT INTO checkpoints (origin, size, root, note, created_ms) VALUES (?, ?, ?, ?, ?)",
                (origin_id, size, root, note, now_ms),
            )
    return work, note


def store_checkpoint(conn: sqlite3.Connection, origin_id: int, size: int, root: bytes, note: str, now_ms: int) -> None:
    """Record a checkpoint (e.g. the size-0 one written at first start)."""
    with transaction(conn):
        conn.execute(
            "INSERT OR IGNORE INTO checkpoints (origin, size, root, note, created_ms) VALUES (?, ?, ?, ?, ?)",
            (origin_id, size, root, note, now_ms),
        )


def latest_checkpoint(conn: sqlite3.Connection, origin_id: int) -> StoredCheckpoint | None:
    row = conn.execute(
        "SELECT o.public_key, c.size, c.root, c.note, c.created_ms FROM checkpoints c"
        " JOIN origins o ON o.id = c.origin WHERE c.origin = ? ORDER BY c.size DESC LIMIT 1",
        (origin_id,),
    ).fetchone()
    return StoredCheckpoint(*row) if row else None


def checkpoint_at(conn: sqlite3.Connection, origin_id: int, size: int) -> StoredCheckpoint | None:
    row = conn.execute(
        "SELECT o.public_key, c.size, c.root, c.note, c.created_ms FROM checkpoints c"
        " JOIN origins o ON o.id = c.origin WHERE c.origin = ? AND c.size = ?",
        (origin_id, size),
    ).fetchone()
    return StoredCheckpoint(*row) if row else None


def entries_range(conn: sqlite3.Connection, origin_id: int, start: int, end: int) -> list[bytes]:
    """Envelopes at [start, end) of an origin log, in order."""
    rows = conn.execute(
        "SELECT envelope FROM entries WHERE origin = ? AND idx >= ? AND idx < ? ORDER BY idx",
        (origin_id, start, end),
    ).fetchall()
    return [r[0] for r in rows]


def entry_in_origin(conn: sqlite3.Connection, origin_id: int, event_id: bytes) -> tuple[int, bytes] | None:
    """(index, envelope) of an event in one origin log, or None."""
    return conn.execute(
        "SELECT idx, envelope FROM entries WHERE origin = ? AND event_id = ?", (origin_id, event_id)
    ).fetchone()


def entries_with_ids(conn: sqlite3.Connection, origin_id: int, start: int, end: int) -> list[tuple[int, bytes, bytes]]:
    """(index, event id, envelope) at [start, end) of an origin log, in order."""
    return conn.execute(
        "SELECT idx, event_id, envelope FROM entries WHERE origin = ? AND idx >= ? AND idx < ? ORDER BY idx",
        (origin_id, start, end),
    ).fetchall()


# An agent's events: those it signed, and the metered events a meter signed about it (body.agent,
# kept in the subject column; PROTOCOL.md §6).
_AGENT_ROWS = (
    "SELECT {cols} FROM entries WHERE signer = ? AND ts >= ? AND ts < ?{kind}"
    " UNION ALL SELECT {cols} FROM entries WHERE subject = ? AND signer != ? AND kind IN ('act', 'dat', 'cpt')"
    " AND ts >= ? AND ts < ?{kind}"
)


def _agent_rows(cols: str, agent: bytes, since_ms: int, until_ms: int, kind: str | None) -> tuple[str, list]:
    k = [kind] if kind else []
    sql = _AGENT_ROWS.format(cols=cols, kind=" AND kind = ?" if kind else "")
    return sql, [agent, since_ms, until_ms, *k, agent, agent, since_ms, until_ms, *k]


def usage_totals(
    conn: sqlite3.Connection, signer: bytes, since_ms: int, until_ms: int, kind: str | None
) -> list[tuple[str, int, int, int, int, int]]:
    """(kind, count, Σm0, Σm1, Σm2, Σm3) of an agent's events with since ≤ ts < until.

    Each event id counts once, whichever origin logs hold it.
    """
    # Each amount is summed as its high and low SUM_SPLIT_BITS bits apart, so no partial sum leaves
    # int64 for fewer than SUM_EVENTS_MAX events (ledger.constants); Python joins them exactly.
    b, low = SUM_SPLIT_BITS, (1 << SUM_SPLIT_BITS) - 1
    parts = ", ".join(f"sum(m{i} >> {b}), sum(m{i} & {low})" for i in range(4))
    rows, args = _agent_rows("event_id, kind, m0, m1, m2, m3", signer, since_ms, until_ms, kind)
    sql = (
        f"SELECT kind, count(*), {parts} FROM ("
        f" SELECT kind, m0, m1, m2, m3 FROM ({rows}) GROUP BY event_id) GROUP BY kind ORDER BY kind"
    )
    return [(k, count, *(((hi or 0) << b) + (lo or 0) for hi, lo in zip(sums[::2], sums[1::2])))
            for k, count, *sums in conn.execute(sql, args).fetchall()]


def usage_events(
    conn: sqlite3.Connection, signer: bytes, since_ms: int, until_ms: int, kind: str | None, limit: int
) -> list[tuple[bytes, bytes, int, bytes]]:
    """(event_id, origin key, index, envelope) of an agent's events, oldest first, at most limit."""
    rows, args = _agent_rows("event_id, origin, idx, envelope, ts", signer, since_ms, until_ms, kind)
    sql = (
        "SELECT e.event_id, o.public_key, min(e.idx), e.envelope FROM (" + rows + ") e JOIN origins o ON o.id = e.origin"
        " GROUP BY e.event_id ORDER BY e.ts, e.event_id LIMIT ?"
    )
    args = args + [limit]
    return conn.execute(sql, args).fetchall()


def meta_get(conn: sqlite3.Connection, key: str) -> object:
    """A value of the `meta` table, or None."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return row[0] if row else None


def meta_set(conn: sqlite3.Connection, key: str, value: object) -> None:
    with transaction(conn):
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (key, value))
