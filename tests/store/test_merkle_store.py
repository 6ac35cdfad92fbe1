"""node.store.merkle over a real SQLite file: rows, roots and proofs equal the pure ledger.merkle.

The pure reference is a dict of stored hashes filled by ledger.merkle.Frontier; the store must hold
the same rows, give the same roots and proofs, and survive closing and reopening the file.
"""

from __future__ import annotations

import random
import sqlite3
from pathlib import Path

import pytest

from ledger import merkle
from ledger.errors import InvariantViolation
from node.store import merkle as store

ORIGIN = 1
OTHER_ORIGIN = 2
BATCH_SIZES = [1, 2, 3, 0, 7, 64, 1, 100, 255, 1, 500, 33, 1000, 17]


def _leaf(origin: int, i: int) -> bytes:
    return merkle.leaf_hash(b"origin %d leaf %d" % (origin, i))


def _open(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)  # explicit transactions, as the node does
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(store.TREE_HASHES_DDL)
    return conn


class Reference:
    """The pure model: a Frontier and a dict of stored hashes."""

    def __init__(self) -> None:
        self.frontier = merkle.Frontier()
        self.stored: dict[int, bytes] = {}

    def append(self, leaf_hashes: list[bytes]) -> None:
        for h in leaf_hashes:
            self.stored.update(self.frontier.append(h))

    def read(self, indexes: list[int]) -> list[bytes]:
        return [self.stored[i] for i in indexes]


def _append_batch(
    conn: sqlite3.Connection, origin: int, frontier: merkle.Frontier, leaves: list[bytes]
) -> None:
    conn.execute("BEGIN IMMEDIATE")
    store.append_leaves(conn, origin, frontier, leaves)
    assert conn.in_transaction, "append_leaves must leave the transaction to the caller"
    conn.execute("COMMIT")


def _row_count(conn: sqlite3.Connection, origin: int) -> int:
    sql = "SELECT count(*) FROM tree_hashes WHERE origin = ?"
    (count,) = conn.execute(sql, (origin,)).fetchone()
    return int(count)


def test_batched_appends_store_tlog_rows_and_serve_the_pure_proofs(tmp_path: Path) -> None:
    rng = random.Random(9162)
    conn = _open(tmp_path / "log.sqlite")
    frontier = merkle.Frontier()
    other = merkle.Frontier()
    ref = Reference()
    n = 0
    for batch in BATCH_SIZES:
        leaves = [_leaf(ORIGIN, n + i) for i in range(batch)]
        _append_batch(conn, ORIGIN, frontier, leaves)
        # A second origin interleaved in the same table must not disturb the first.
        _append_batch(conn, OTHER_ORIGIN, other, [_leaf(OTHER_ORIGIN, other.size)])
        ref.append(leaves)
        n += batch

        assert frontier.size == n
        assert frontier.root() == ref.frontier.root()
        assert store.tree_hash_at(conn, ORIGIN, n) == ref.frontier.root()
        assert _row_count(conn, ORIGIN) == merkle.stored_hash_count(n)
        rows = dict(conn.execute("SELECT sidx, hash FROM tree_hashes WHERE origin = ?", (ORIGIN,)))
        assert rows == ref.stored

        if n == 0:
            continue
        for _ in range(30):
            size = rng.randint(1, n)
            index = rng.randrange(size)
            m = rng.randint(1, size)
            want_inclusion = merkle.inclusion_proof(
                index, size, ref.read(merkle.inclusion_proof_indexes(index, size))
            )
            want_consistency = merkle.consistency_proof(
                m, size, ref.read(merkle.consistency_proof_indexes(m, size))
            )
            got_inclusion = store.inclusion_proof_at(conn, ORIGIN, index, size)
            got_consistency = store.consistency_proof_at(conn, ORIGIN, m, size)
            assert got_inclusion == want_inclusion
            assert got_consistency == want_consistency
            root = store.tree_hash_at(conn, ORIGIN, size)
            assert merkle.verify_inclusion(index, size, _leaf(ORIGIN, index), got_inclusion, root)
            root1 = store.tree_hash_at(conn, ORIGIN, m)
            assert merkle.verify_consistency(m, size, root1, root, got_consistency)
    assert _row_count(conn, OTHER_ORIGIN) == merkle.stored_hash_count(other.size)
    conn.close()


def test_reopened_file_gives_the_same_frontier_and_keeps_appending(tmp_path: Path) -> None:
    path = tmp_path / "log.sqlite"
    conn = _open(path)
    frontier = merkle.Frontier()
    ref = Reference()
    leaves = [_leaf(ORIGIN, i) for i in range(1234)]
    _append_batch(conn, ORIGIN, frontier, leaves)
    ref.append(leaves)
    conn.close()

    conn = _open(path)
    for size in [0, 1, 2, 3, 777, 1024, 1233, 1234]:
        loaded = store.load_frontier(conn, ORIGIN, size)
        assert loaded.size == size
        assert loaded.root() == store.tree_hash_at(conn, ORIGIN, size)
    loaded = store.load_frontier(conn, ORIGIN, 1234)
    assert loaded.root() == frontier.root() == ref.frontier.root()

    more = [_leaf(ORIGIN, 1234 + i) for i in range(99)]
    _append_batch(conn, ORIGIN, loaded, more)
    ref.append(more)
    assert loaded.root() == ref.frontier.root() == store.tree_hash_at(conn, ORIGIN, 1333)
    assert _row_count(conn, ORIGIN) == merkle.stored_hash_count(1333)
    conn.close()


def test_read_hashes_chunks_large_requests_and_keeps_their_order(tmp_path: Path) -> None:
    conn = _open(tmp_path / "log.sqlite")
    frontier = merkle.Frontier()
    _append_batch(conn, ORIGIN, frontier, [_leaf(ORIGIN, i) for i in range(700)])
    count = merkle.stored_hash_count(700)
    indexes = list(range(count - 1, -1, -1)) + [5, 5]  # > 500 params, reversed, with a repeat
    got = store.read_hashes(conn, ORIGIN, indexes)
    rows = dict(conn.execute("SELECT sidx, hash FROM tree_hashes WHERE origin = ?", (ORIGIN,)))
    assert got == [rows[i] for i in indexes]
    assert store.read_hashes(conn, ORIGIN, []) == []
    conn.close()


def test_missing_stored_hash_is_an_invariant_violation(tmp_path: Path) -> None:
    conn = _open(tmp_path / "log.sqlite")
    frontier = merkle.Frontier()
    _append_batch(conn, ORIGIN, frontier, [_leaf(ORIGIN, i) for i in range(10)])
    with pytest.raises(InvariantViolation):
        store.read_hashes(conn, ORIGIN, [0, merkle.stored_hash_count(10)])
    with pytest.raises(InvariantViolation):
        store.tree_hash_at(conn, ORIGIN, 11)  # beyond the stored log
    with pytest.raises(InvariantViolation):
        store.load_frontier(conn, OTHER_ORIGIN, 3)  # another origin holds nothing
    conn.close()


def test_failed_insert_leaves_the_frontier_unchanged(tmp_path: Path) -> None:
    conn = _open(tmp_path / "log.sqlite")
    frontier = merkle.Frontier()
    _append_batch(conn, ORIGIN, frontier, [_leaf(ORIGIN, i) for i in range(5)])
    before = (frontier.size, frontier.root())
    # A row already sitting where the next hashes go makes the insert fail half way.
    conn.execute(
        "INSERT INTO tree_hashes (origin, sidx, hash) VALUES (?, ?, ?)",
        (ORIGIN, merkle.stored_hash_count(5) + 2, merkle.EMPTY_ROOT),
    )
    conn.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.IntegrityError):
        store.append_leaves(conn, ORIGIN, frontier, [_leaf(ORIGIN, 5 + i) for i in range(4)])
    conn.execute("ROLLBACK")
    assert (frontier.size, frontier.root()) == before
    assert store.tree_hash_at(conn, ORIGIN, 5) == before[1]
    conn.close()
