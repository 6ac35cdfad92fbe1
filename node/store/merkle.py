"""Merkle log storage in SQLite: one row per stored hash, in tlog's layout (ledger.merkle).

Contract
--------
- Table `tree_hashes(origin, sidx, hash)`: for each origin log, the hash of every perfect subtree
  at its tlog stored index `sidx` (ledger.merkle.stored_hash_index). A log of n leaves has exactly
  the rows sidx = 0 .. stored_hash_count(n) - 1; rows are written once and never updated.
- Synchronous functions over a `sqlite3.Connection`: the daemon runs them in its writer and reader
  threads; benchmarks and the CLI call them directly.
- Writes never commit: the caller owns the transaction (STYLE P8, one `BEGIN IMMEDIATE` per
  accepted submission, holding the leaf, its tree hashes and the rest).
- Reads follow "indexes → one query → pure compute": ledger.merkle names the stored indexes, one
  SELECT fetches them (chunks of at most 500 parameters), ledger.merkle computes. A missing row
  means the store is not the log it claims to be and raises `InvariantViolation` (P4). Asking for a
  size beyond what is stored is the caller's bug: check the size against the log head first.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from itertools import repeat

from ledger import merkle
from ledger.constants import HASH_SIZE
from ledger.errors import check

TREE_HASHES_DDL = (
    "CREATE TABLE IF NOT EXISTS tree_hashes ("
    "origin INTEGER NOT NULL, sidx INTEGER NOT NULL, hash BLOB NOT NULL, "
    "PRIMARY KEY (origin, sidx)) WITHOUT ROWID;"
)

# SQLite's default SQLITE_MAX_VARIABLE_NUMBER was 999 before 3.32; stay well below it.
_PARAMS_MAX = 500

_INSERT = "INSERT INTO tree_hashes (origin, sidx, hash) VALUES (?, ?, ?)"
_ROWS_PER_INSERT = 256  # 768 parameters: below SQLite's limit before 3.32 (999)
_INSERT_MANY = "INSERT INTO tree_hashes (origin, sidx, hash) VALUES " + ", ".join(["(?, ?, ?)"] * _ROWS_PER_INSERT)


def _select_sql(count: int) -> str:
    """The SELECT for `count` indexes; one string per count, so sqlite3's statement cache hits."""
    sql = _SELECT_BY_COUNT.get(count)
    if sql is None:
        marks = ",".join("?" * count)
        sql = f"SELECT sidx, hash FROM tree_hashes WHERE origin = ? AND sidx IN ({marks})"
        _SELECT_BY_COUNT[count] = sql
    return sql


_SELECT_BY_COUNT: dict[int, str] = {}


def read_hashes(conn: sqlite3.Connection, origin: int, indexes: Sequence[int]) -> list[bytes]:
    """Return the stored hashes at `indexes`, in order; InvariantViolation if one is missing."""
    if not indexes:
        return []
    if len(indexes) <= _PARAMS_MAX:  # every proof and root: one query
        found = dict(conn.execute(_select_sql(len(indexes)), (origin, *indexes)).fetchall())
    else:
        found = {}
        for start in range(0, len(indexes), _PARAMS_MAX):
            chunk = indexes[start : start + _PARAMS_MAX]
            found.update(conn.execute(_select_sql(len(chunk)), (origin, *chunk)).fetchall())
    missing = [i for i in indexes if i not in found]
    check(not missing, f"origin {origin}: stored hashes {missing[:8]} are missing")
    hashes = [found[i] for i in indexes]
    check(
        all(len(h) == HASH_SIZE for h in hashes),
        f"origin {origin}: a stored hash is not {HASH_SIZE} bytes",
    )
    return hashes


def load_frontier(conn: sqlite3.Connection, origin: int, n: int) -> merkle.Frontier:
    """Return the append frontier of the origin's log at size n (one query of popcount(n) rows)."""
    indexes = merkle.Frontier.indexes(n)
    return merkle.Frontier.from_hashes(n, read_hashes(conn, origin, indexes))


def append_leaves(
    conn: sqlite3.Connection,
    origin: int,
    frontier: merkle.Frontier,
    leaf_hashes: Sequence[bytes],
) -> None:
    """Append leaf hashes to the origin's log and insert every new stored hash; does not commit.

    `frontier` must be the log's current frontier; it is advanced only once the rows are written.
    If the insert fails, the frontier is left as it was and the caller must roll back.
    """
    work = frontier.copy()
    first, hashes = work.extend(leaf_hashes)
    # Stored indexes of consecutive leaves are contiguous (ledger.merkle.Frontier.extend), so the
    # rows are (origin, first + i, hashes[i]); zip builds the tuples in C.
    rows = list(zip(repeat(origin), range(first, first + len(hashes)), hashes))
    full = len(rows) - len(rows) % _ROWS_PER_INSERT
    for start in range(0, full, _ROWS_PER_INSERT):  # one SQLite step per 256 rows, not one per row
        conn.execute(_INSERT_MANY, [v for row in rows[start : start + _ROWS_PER_INSERT] for v in row])
    if full < len(rows):
        conn.executemany(_INSERT, rows[full:])
    frontier.restore(work)


def tree_hash_at(conn: sqlite3.Connection, origin: int, n: int) -> bytes:
    """Return the RFC 9162 root of the origin's log at size n."""
    return merkle.tree_hash(n, read_hashes(conn, origin, merkle.tree_hash_indexes(n)))


def inclusion_proof_at(conn: sqlite3.Connection, origin: int, index: int, n: int) -> list[bytes]:
    """Return the RFC 9162 §2.1.3.1 inclusion proof of leaf `index` in the log at size n."""
    indexes = merkle.inclusion_proof_indexes(index, n)
    return merkle.inclusion_proof(index, n, read_hashes(conn, origin, indexes))


def consistency_proof_at(conn: sqlite3.Connection, origin: int, m: int, n: int) -> list[bytes]:
    """Return the RFC 9162 §2.1.4.1 consistency proof from size m to size n of the origin's log."""
    indexes = merkle.consistency_proof_indexes(m, n)
    return merkle.consistency_proof(m, n, read_hashes(conn, origin, indexes))
