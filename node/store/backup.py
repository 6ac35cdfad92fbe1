"""Ledger files as whole files: online backup, recognising a ledger, reading its own log's head.

`backup_file` uses SQLite's online backup API (sqlite3_backup_*) from a read-only
connection, copying every page in one step: the copy is the database as of one read
transaction, so it is consistent however hard the node is writing (WAL mode lets the
writer carry on meanwhile; a page-by-page backup would restart on every write from
another connection and might never finish under load).
"""

from __future__ import annotations

import os
import sqlite3

from node.store import schema
from node.store import logs as log_store
from node.store import merkle as merkle_store
from node.store.sqlite import connect

SQLITE_MAGIC = b"SQLite format 3\x00"
LEDGER_TABLES = ("meta", "origins", "entries", "tree_hashes", "checkpoints")


def backup_file(src_path: str, dest_path: str) -> int:
    """Copy the ledger at src_path into a new file dest_path (a single file, rollback journal); returns its bytes."""
    src = connect(src_path, readonly=True)
    try:
        dest = sqlite3.connect(dest_path, isolation_level=None)
        try:
            src.backup(dest, pages=-1)  # one step: one read transaction, one consistent snapshot
            # A backup is one self-contained file; the node puts it back in WAL mode when it opens it.
            dest.execute("PRAGMA journal_mode=DELETE")
        finally:
            dest.close()
    finally:
        src.close()
    return os.path.getsize(dest_path)


def ledger_problem(path: str) -> str | None:
    """Why the file at path is not a ledger this code can open, or None when it is one."""
    try:
        with open(path, "rb") as f:
            magic = f.read(len(SQLITE_MAGIC))
    except OSError as e:
        return f"cannot read {path}: {e.strerror}"
    if magic != SQLITE_MAGIC:
        return f"{path} is not an SQLite database, so not an ATS ledger"
    try:
        conn = connect(path, readonly=True)
    except sqlite3.Error as e:
        return f"{path}: {e}"
    try:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        missing = [t for t in LEDGER_TABLES if t not in names]
        if missing:
            return f"{path} is an SQLite database but not an ATS ledger (no {', '.join(missing)} table)"
        version = schema.schema_version(conn)
        if version > len(schema.MIGRATIONS):
            return f"{path} has schema version {version}, newer than this ats-ledger ({len(schema.MIGRATIONS)}): upgrade first"
    except sqlite3.Error as e:
        return f"{path}: {e}"
    finally:
        conn.close()
    return None


def own_head(path: str, public_key: bytes) -> tuple[int, str] | None:
    """(size, note) of the latest checkpoint of origin public_key in the ledger at path, or None."""
    conn = connect(path, readonly=True)
    try:
        row = log_store.origin_row(conn, public_key)
        if row is None:
            return None
        cp = log_store.latest_checkpoint(conn, row[0])
        return None if cp is None else (cp.size, cp.note)
    finally:
        conn.close()


def root_at(path: str, public_key: bytes, size: int) -> bytes | None:
    """The tree root of origin public_key's log at size in the ledger at path (None: it holds fewer)."""
    conn = connect(path, readonly=True)
    try:
        row = log_store.origin_row(conn, public_key)
        if row is None or row[1] < size:
            return None
        return merkle_store.tree_hash_at(conn, row[0], size)
    finally:
        conn.close()
