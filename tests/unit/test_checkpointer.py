"""WAL checkpoints off the writer's commits (node/store/sqlite.py Checkpointer), on a real SQLite file."""

from __future__ import annotations

import asyncio
import os
import sqlite3

from node.store import sqlite as store_sqlite
from node.store.sqlite import Database


def insert(conn: sqlite3.Connection, n: int) -> None:
    with store_sqlite.transaction(conn):
        conn.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", [(os.urandom(16).hex(), os.urandom(200)) for _ in range(n)])


async def test_the_writer_never_checkpoints_and_the_checkpointer_copies_the_wal_while_commits_go_on(tmp_path):
    path = str(tmp_path / "ledger.sqlite")
    db = Database(path, checkpoint_ms=20)
    await db.open()
    try:
        assert await db.write(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 0
        for _ in range(60):
            await db.write(insert, 50)  # ~3,000 rows, well past SQLite's 1,000-page automatic checkpoint
        deadline = asyncio.get_running_loop().time() + 10
        while db._checkpointer.checkpoints < 2 and asyncio.get_running_loop().time() < deadline:
            await db.write(insert, 1)
            await asyncio.sleep(0.03)
        assert db._checkpointer.checkpoints >= 2 and db._checkpointer.failures == 0
        # the database file itself grew: the pages were copied out of the WAL by the checkpointer
        assert os.path.getsize(path) > 3000 * 200
    finally:
        await db.close()
    # closed: one self-contained file, every row in it
    assert not os.path.exists(path + "-wal")
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM meta").fetchone()[0] >= 3000
    conn.close()


async def test_the_writer_checkpoints_itself_past_the_wal_bound_when_the_checkpointer_is_behind(tmp_path, monkeypatch):
    path = str(tmp_path / "ledger.sqlite")
    monkeypatch.setattr(store_sqlite, "WAL_WRITER_CHECKPOINT_BYTES", 256 * 1024)
    db = Database(path, checkpoint_ms=3_600_000)  # the checkpointer's first run waits an hour
    await db.open()
    try:
        db._checkpointer._last = asyncio.get_running_loop().time() + 3600  # and so does every later one
        for _ in range(80):
            await db.write(insert, 50)
        # without the bound the WAL would hold every page of 4,000 rows (> 1 MB); with it, the writer
        # copied it out whenever it passed 256 KiB and SQLite wrote the WAL from its start again
        assert os.path.getsize(path) > 4000 * 200
        assert os.path.getsize(path + "-wal") < 600 * 1024
    finally:
        await db.close()


async def test_checkpoint_ms_0_keeps_sqlites_automatic_checkpoint_in_the_writer(tmp_path):
    db = Database(str(tmp_path / "ledger.sqlite"), checkpoint_ms=0)
    await db.open()
    try:
        assert await db.write(lambda c: c.execute("PRAGMA wal_autocheckpoint").fetchone()[0]) == 1000
        await db.write(insert, 10)
        assert db._checkpointer is None
    finally:
        await db.close()
