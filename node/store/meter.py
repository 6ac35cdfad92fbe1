"""Open metered calls in SQLite: what the gateway and the task meter reserved and have not yet charged.

A row is written (in its own transaction) before the call reaches the upstream or the task
starts, and deleted in the same transaction that appends the metered event that settles it.
So a node killed between the two finds the row at restart and charges the call at its
reservation (node/gateway/calls.py): no call goes unrecorded. The table is local state, not
part of the log; it is created if missing rather than by a numbered migration, so it never
changes the ledger's schema version.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Iterable

from node.store.sqlite import transaction


@dataclass(frozen=True)
class OpenCall:
    """A reservation: the agent, what it is for, and the worst case held (milli-T, tokens)."""

    call: bytes  # 16 bytes; the nonce of the event that settles it
    agent: bytes
    kind: str  # "llm" (a gateway call) or "task" (ats exec)
    model: str  # an LLM call's model; a task's host
    cost: int
    tokens_in: int
    tokens_out: int
    created_ms: int
    expires_ms: int = 0  # a task not settled by then is charged at its reservation; 0: never (LLM calls)

    @property
    def tokens(self) -> int:
        return self.tokens_in + self.tokens_out


_CREATE = """
CREATE TABLE IF NOT EXISTS meter_calls (
    call BLOB PRIMARY KEY,
    agent BLOB NOT NULL,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    cost INTEGER NOT NULL,
    tokens_in INTEGER NOT NULL,
    tokens_out INTEGER NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
) WITHOUT ROWID
"""


def ensure_table(conn: sqlite3.Connection) -> None:
    """Create the table if it is missing; a read only when it exists (so a reload after a failed
    commit, while another process may hold the write lock, takes no lock)."""
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meter_calls'").fetchone() is None:
        conn.execute(_CREATE)


def open_calls(conn: sqlite3.Connection) -> list[OpenCall]:
    """Every reservation not yet settled, oldest first."""
    ensure_table(conn)
    rows = conn.execute(
        "SELECT call, agent, kind, model, cost, tokens_in, tokens_out, created_ms, expires_ms FROM meter_calls"
        " ORDER BY created_ms, call"
    ).fetchall()
    return [OpenCall(*row) for row in rows]


def insert_calls(conn: sqlite3.Connection, calls: list[OpenCall]) -> None:
    """Persist reservations in one transaction of their own (durable before the calls go out)."""
    with transaction(conn):
        conn.executemany(
            "INSERT INTO meter_calls (call, agent, kind, model, cost, tokens_in, tokens_out, created_ms, expires_ms)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [(c.call, c.agent, c.kind, c.model, c.cost, c.tokens_in, c.tokens_out, c.created_ms, c.expires_ms)
             for c in calls],
        )


def delete_calls(conn: sqlite3.Connection, calls: Iterable[bytes]) -> None:
    """Forget settled reservations (inside the caller's transaction)."""
    conn.executemany("DELETE FROM meter_calls WHERE call = ?", [(c,) for c in calls])
