"""Numbered schema migrations. Append only: never edit a released migration.

`meta.schema_version` holds the number of migrations applied. Each migration
runs in its own transaction with the version bump, so a crash leaves the file
at a whole version.
"""

from __future__ import annotations

import sqlite3

MIGRATIONS: tuple[str, ...] = (
    # 1: origin logs, their entries, stored Merkle hashes (sumdb/tlog layout), checkpoints.
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value) WITHOUT ROWID;
    CREATE TABLE origins (
        id INTEGER PRIMARY KEY,
        public_key BLOB NOT NULL UNIQUE,
        size INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE entries (
        origin INTEGER NOT NULL REFERENCES origins(id),
        idx INTEGER NOT NULL,
        event_id BLOB NOT NULL,
        signer BLOB NOT NULL,
        kind TEXT NOT NULL,
        ts INTEGER NOT NULL,
        envelope BLOB NOT NULL,
        m0 INTEGER NOT NULL DEFAULT 0,
        m1 INTEGER NOT NULL DEFAULT 0,
        m2 INTEGER NOT NULL DEFAULT 0,
        m3 INTEGER NOT NULL DEFAULT 0,
        accepted_ms INTEGER NOT NULL,
        budgets TEXT,
        PRIMARY KEY (origin, idx)
    ) WITHOUT ROWID;
    CREATE INDEX entries_event_id ON entries (event_id);
    CREATE INDEX entries_signer_ts ON entries (signer, ts);
    CREATE TABLE tree_hashes (
        origin INTEGER NOT NULL,
        sidx INTEGER NOT NULL,
        hash BLOB NOT NULL,
        PRIMARY KEY (origin, sidx)
    ) WITHOUT ROWID;
    CREATE TABLE checkpoints (
        origin INTEGER NOT NULL REFERENCES origins(id),
        size INTEGER NOT NULL,
        root BLOB NOT NULL,
        note TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (origin, size)
    ) WITHOUT ROWID;
    """,
    # 2: budgets: who an entry is about (TRT subject, policy record's agent), usage counters,
    # alerts, and run reservations.
    """
    ALTER TABLE entries ADD COLUMN subject BLOB;
    CREATE INDEX entries_subject_kind ON entries (subject, kind) WHERE subject IS NOT NULL;
    CREATE INDEX entries_policy ON entries (origin, idx) WHERE kind NOT IN ('act', 'dat', 'cpt', 'trt');
    CREATE TABLE usage_counters (
        scope TEXT NOT NULL,
        scope_id TEXT NOT NULL,
        metric TEXT NOT NULL,
        window TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        amount INTEGER NOT NULL,
        PRIMARY KEY (scope, scope_id, metric, window, start_ms)
    ) WITHOUT ROWID;
    CREATE TABLE alerts (
        id INTEGER PRIMARY KEY,
        ts_ms INTEGER NOT NULL,
        type TEXT NOT NULL,
        scope TEXT NOT NULL,
        scope_id TEXT NOT NULL,
        metric TEXT NOT NULL,
        detail TEXT NOT NULL,
        delivered INTEGER NOT NULL DEFAULT 0
    );
    CREATE INDEX alerts_scope ON alerts (scope, scope_id, ts_ms);
    """,
    # 3: replication: witnesses' cosignatures of checkpoints, and evidence of forked origins.
    """
    CREATE TABLE cosignatures (
        origin INTEGER NOT NULL REFERENCES origins(id),
        size INTEGER NOT NULL,
        witness BLOB NOT NULL,
        line TEXT NOT NULL,
        received_ms INTEGER NOT NULL,
        PRIMARY KEY (origin, size, witness)
    ) WITHOUT ROWID;
    CREATE TABLE forks (
        origin BLOB PRIMARY KEY,
        detected_ms INTEGER NOT NULL,
        reported_by TEXT NOT NULL,
        evidence TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
)


def schema_version(conn: sqlite3.Connection) -> int:
    exists = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not exists:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection) -> int:
    """Apply every migration not yet applied; returns the resulting version."""
    version = schema_version(conn)
    if version > len(MIGRATIONS):
        raise RuntimeError(
            f"ledger schema version {version} is newer than this ats-ledger ({len(MIGRATIONS)}): upgrade ats-ledger"
        )
    for number in range(version + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[number - 1].split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (number,))
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    return len(MIGRATIONS)
