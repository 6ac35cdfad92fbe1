"""SQLite connections: one writer thread, a pool of reader threads (P8).

All writes run as whole functions on the single writer connection, in its own
thread, so a group commit is one thread hop and one `BEGIN IMMEDIATE`
transaction, however many events it holds. Reads run on separate read-only
connections in a small thread pool; WAL mode lets them proceed while the
writer commits. Store functions are plain synchronous code over a
`sqlite3.Connection`, shared by the daemon, `ats verify-db` and benchmarks.

(aiosqlite would give one thread hop per statement; a group commit of a
thousand events is dozens of statements, so the writer runs whole functions
instead. This is also what datasette does with its write thread.)

WAL checkpoints run on a thread of their own (`Checkpointer`), not inside the
writer's COMMITs: SQLite's automatic checkpoint makes the commit that passes
1,000 WAL pages copy them all into the database file and fsync it, a pause of
milliseconds for whichever events shared that commit (at 2,000 single events/s,
the p99). With `wal_autocheckpoint = 0` on the writer, a PASSIVE checkpoint on a
separate connection copies the pages while the writer goes on committing; the
writer only checkpoints itself if the WAL passes `WAL_WRITER_CHECKPOINT_BYTES`
(the checkpointer fell far behind), so the file stays bounded either way.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, Callable, Iterator, TypeVar

from ledger.errors import NotReady
from node.clock import SystemClock
from node.store import schema

T = TypeVar("T")

logger = logging.getLogger("ats.store")
_CLOCK = SystemClock()

# The default of the setting wal_checkpoint_ms: a PASSIVE checkpoint at most this often while
# writes come in (SQLite's own default, 1,000 pages, is reached every ~0.1 s at a few thousand events/s).
CHECKPOINT_INTERVAL_S = 0.1
# The writer checkpoints itself past this much WAL (the checkpointer is far behind or failing).
WAL_WRITER_CHECKPOINT_BYTES = 256 * 1024 * 1024

# Re-exported so code outside node/store/ names connections without importing sqlite3.
Connection = sqlite3.Connection


class StorageError(NotReady):
    """SQLite failed (disk full, I/O error, locked): the operation's transaction rolled back.

    A 503 `storage_error` to whoever asked (node/api/errors.py renders it like any LedgerError).
    """

    def __init__(self, message: str):
        super().__init__("storage_error", message)


def connect(path: str, *, readonly: bool = False, synchronous: str = "full") -> sqlite3.Connection:
    """A configured connection. Autocommit mode: transactions are explicit."""
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={'FULL' if synchronous == 'full' else 'NORMAL'}")
    conn.execute("PRAGMA busy_timeout=10000")
    conn.execute("PRAGMA foreign_keys=ON")
    # the writer's page cache holds the hot index pages of a batch; readers need little
    conn.execute(f"PRAGMA cache_size={-2000 if readonly else -16000}")  # KiB: 2 MiB per reader, 16 MiB writer
    return conn


@contextmanager
def transaction(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE … COMMIT, or ROLLBACK on any exception."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def open_database(path: str, synchronous: str = "full") -> sqlite3.Connection:
    """Open (creating if needed) the ledger file and bring its schema up to date."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    conn = connect(path, synchronous=synchronous)
    schema.migrate(conn)
    return conn


def _wrapped(fn: Callable[..., T], conn: sqlite3.Connection | None, args: tuple) -> T:
    try:
        return fn(conn, *args)
    except sqlite3.Error as e:
        raise StorageError(f"{type(e).__name__}: {e}") from e
    except OverflowError as e:  # a Python int past SQLite's int64: the statement never ran
        raise StorageError(f"value out of SQLite's integer range: {e}") from e


class Checkpointer:
    """PASSIVE WAL checkpoints on a thread and connection of their own, at most every `interval_s`
    (the setting wal_checkpoint_ms) while commits come in (see the module). A checkpoint covers
    every commit before it starts; frames committed while one runs wait for the next commit's
    checkpoint (or the close, which copies everything)."""

    def __init__(self, path: str, synchronous: str, interval_s: float = CHECKPOINT_INTERVAL_S):
        self._path, self._synchronous, self._interval_s = path, synchronous, interval_s
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="ats-checkpoint")
        self._conn: sqlite3.Connection | None = None
        self._running = False
        self._stop = threading.Event()
        self._closed = False
        self._last = 0.0
        self.checkpoints = 0
        self.failures = 0

    def committed(self) -> None:
        """After a commit (on the event loop): start a checkpoint if none runs and the last is old enough."""
        if self._running or self._closed:
            return
        delay = self._last + self._interval_s - _CLOCK.monotonic_s()
        self._running = True
        self._pool.submit(self._run, max(0.0, delay))

    def _run(self, delay: float) -> None:
        try:
            if delay and self._stop.wait(delay):  # on this thread: the writer and the event loop go on
                return
            if self._conn is None:
                self._conn = connect(self._path, synchronous=self._synchronous)
                self._conn.execute("PRAGMA cache_size=-256")  # KiB: a checkpoint copies frames, it reads no b-tree
            self._conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
            self.checkpoints += 1
        except sqlite3.Error as e:  # the next commit tries again; the writer's bound still holds
            self.failures += 1
            logger.warning("WAL checkpoint failed: %s: %s", type(e).__name__, e)
        finally:
            self._last = _CLOCK.monotonic_s()
            self._running = False

    def close(self) -> None:
        self._closed = True
        self._stop.set()
        self._pool.shutdown(wait=True)
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def writer_checkpoint_if_big(conn: sqlite3.Connection, wal_path: str) -> None:
    """The writer's own bound on the WAL when the checkpointer is behind (see the module)."""
    try:
        size = os.stat(wal_path).st_size
    except OSError:
        return
    if size > WAL_WRITER_CHECKPOINT_BYTES:
        conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()


class Database:
    """The single writer connection and the reader pool, used from asyncio."""

    def __init__(self, path: str, *, synchronous: str = "full", reader_threads: int = 4,
                 checkpoint_ms: int = int(CHECKPOINT_INTERVAL_S * 1000)):
        self.path = path
        self._synchronous = synchronous
        # checkpoint_ms 0: SQLite's automatic checkpoint in the writer's commits, no Checkpointer
        self._checkpointer = Checkpointer(path, synchronous, checkpoint_ms / 1000) if checkpoint_ms > 0 else None
        self._wal_path = path + "-wal"
        self._writer_pool = ThreadPoolExecutor(1, thread_name_prefix="ats-writer")
        self._reader_pool = ThreadPoolExecutor(reader_threads, thread_name_prefix="ats-reader")
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._writer: sqlite3.Connection | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()

        def open_writer() -> sqlite3.Connection:
            conn = open_database(self.path, self._synchronous)
            if self._checkpointer is not None:
                conn.execute("PRAGMA wal_autocheckpoint=0")  # the Checkpointer's work (see the module)
            return conn

        self._writer = await loop.run_in_executor(self._writer_pool, open_writer)

    def _reader(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path, readonly=True, synchronous=self._synchronous)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(writer_conn, *args) on the writer thread."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._writer_pool, self._write, fn, args)
        finally:
            if self._checkpointer is not None:
                self._checkpointer.committed()

    def _write(self, fn: Callable[..., T], args: tuple) -> T:
        try:
            return _wrapped(fn, self._writer, args)
        finally:
            try:
                if self._checkpointer is not None and self._writer is not None:
                    writer_checkpoint_if_big(self._writer, self._wal_path)
            except sqlite3.Error as e:
                logger.warning("WAL checkpoint by the writer failed: %s: %s", type(e).__name__, e)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(reader_conn, *args) on a reader thread."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._reader_pool, lambda: _wrapped(fn, self._reader(), args))

    async def close(self) -> None:
        """Close the readers, then the writer: the last connection to close (a writable one)
        checkpoints the WAL into the database and removes it, so a stopped node's ledger is one
        self-contained file (read-only connections cannot do that)."""
        loop = asyncio.get_running_loop()
        self._reader_pool.shutdown(wait=True)
        if self._checkpointer is not None:
            await loop.run_in_executor(None, self._checkpointer.close)
        with self._readers_lock:
            for conn in self._readers:
                conn.close()
            self._readers.clear()

        def close_writer() -> None:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

        await loop.run_in_executor(self._writer_pool, close_writer)
        self._writer_pool.shutdown(wait=True)


class InlineDatabase(Database):
    """The same interface run on the caller's thread, with one connection for reads and writes.

    For deterministic simulation (tests/sim) and single-threaded tools: no thread
    hop, so a run's order of operations is fixed by the event loop alone. Each call
    still runs whole, as on the writer thread, so a simulated crash between two
    awaits sees exactly what a SIGKILL would: committed transactions only.
    """

    def __init__(self, path: str, *, synchronous: str = "normal"):
        self.path = path
        self._synchronous = synchronous
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        self._conn = open_database(self.path, self._synchronous)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        return _wrapped(fn, self._conn, args)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        return _wrapped(fn, self._conn, args)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def flush_wal(conn: sqlite3.Connection) -> None:
    """Copy every committed transaction from the -wal file into the main database file now
    (a SQLite "WAL checkpoint"), so that what was just committed survives the -wal's loss."""
    conn.execute("PRAGMA wal_checkpoint(FULL)")
