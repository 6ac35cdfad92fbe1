"""The superblock: the largest checkpoint this node ever signed, kept where a lost `-wal` cannot take it.

Why. SQLite keeps the last transactions in `ledger.sqlite-wal` until a WAL
checkpoint copies them into the main file. If that file is truncated or deleted
after a crash, acknowledged events and the checkpoints that signed them vanish,
and a node that trusted the database alone would sign new checkpoints at sizes
it had already signed with other roots: it would fork its own log. So, as
TigerBeetle keeps a superblock beside its data file, the node records
(size, root) of every checkpoint it signs in this small file (written before the
transaction holding the checkpoint commits, flushed while it commits, and durable
before the checkpoint or any receipt of the batch is served), and at start refuses to sign if the
database's log is shorter than the recorded size or has another root there.

Layout (`ledger.superblock`, 256 bytes): two 128-byte slots, each
    magic "ATSSB1\\0\\0" | seq u64 | size u64 | root 32 | origin key 32 | SHA-256 of the previous 88 bytes | 8 zero
big-endian. A record overwrites the slot `seq % 2` in place (no allocation, so it
works on a full disk) and `fdatasync`s; a torn write spoils one slot only, and
the valid slot with the larger seq wins. The file is created whole (temp file,
fsync, rename, fsync of the folder).
"""

from __future__ import annotations

import hashlib
import os
import struct
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

FILE_NAME = "ledger.superblock"
MAGIC = b"ATSSB1\0\0"
SLOT_BYTES = 128
_BODY = struct.Struct(">8sQQ32s32s")  # 88 bytes


class SuperblockError(Exception):
    """The file exists but no slot holds a valid record (both checksums fail)."""


@dataclass(frozen=True)
class Record:
    seq: int
    size: int
    root: bytes
    origin: bytes


def _encode(rec: Record) -> bytes:
    body = _BODY.pack(MAGIC, rec.seq, rec.size, rec.root, rec.origin)
    slot = body + hashlib.sha256(body).digest()
    return slot + bytes(SLOT_BYTES - len(slot))


def _decode(slot: bytes) -> Record | None:
    if len(slot) != SLOT_BYTES:
        return None
    body, digest = slot[: _BODY.size], slot[_BODY.size : _BODY.size + 32]
    if hashlib.sha256(body).digest() != digest:
        return None
    magic, seq, size, root, origin = _BODY.unpack(body)
    if magic != MAGIC:
        return None
    return Record(seq, size, root, origin)


def path_for(data_dir: str) -> str:
    return os.path.join(data_dir, FILE_NAME)


def fsync_path(path: str) -> None:
    """fsync a file, or a folder (so that a rename in it is durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read(path: str) -> tuple[Record | None, int]:
    """(the newest valid record, how many slots were valid); (None, 0) if the file is missing.

    Raises SuperblockError if the file exists and neither slot is valid.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(2 * SLOT_BYTES + 1)
    except FileNotFoundError:
        return None, 0
    slots = [_decode(data[i * SLOT_BYTES : (i + 1) * SLOT_BYTES]) for i in range(2)]
    valid = [s for s in slots if s is not None]
    if not valid:
        raise SuperblockError(f"{path}: no valid record (both slots fail their checksum; {len(data)} bytes)")
    return max(valid, key=lambda r: r.seq), len(valid)


class Superblock:
    """An open superblock file; `record` is called on the writer thread only."""

    def __init__(self, path: str, current: Record):
        self.path = path
        self.current = current
        self._fd = os.open(path, os.O_RDWR)
        self._syncer: ThreadPoolExecutor | None = None  # runs the fdatasync of record(wait=False)
        self._pending: Future | None = None

    @classmethod
    def create(cls, path: str, origin: bytes, size: int, root: bytes) -> "Superblock":
        """Write a new file holding (size, root) in both slots, atomically."""
        rec = Record(1, size, root, origin)
        data = _encode(rec) + _encode(Record(0, size, root, origin))
        tmp = f"{path}.tmp.{os.getpid()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        fsync_path(os.path.dirname(os.path.abspath(path)))
        return cls(path, rec)

    def record(self, size: int, root: bytes, *, wait: bool = True) -> None:
        """Make (size, root) the newest record, durably (one pwrite and one fdatasync).

        With wait=False the fdatasync runs on another thread, alongside the caller's own
        work (the writer's COMMIT, which has its own fsync), and `synced` waits for it:
        the two flushes overlap instead of adding up. Nothing may serve the checkpoint
        before `synced` returns.
        """
        if size == self.current.size and root == self.current.root:
            return
        self.synced()
        rec = Record(self.current.seq + 1, size, root, self.current.origin)
        os.pwrite(self._fd, _encode(rec), (rec.seq % 2) * SLOT_BYTES)
        if wait:
            os.fdatasync(self._fd)
        else:
            if self._syncer is None:
                self._syncer = ThreadPoolExecutor(1, thread_name_prefix="ats-superblock")
            self._pending = self._syncer.submit(os.fdatasync, self._fd)
        self.current = rec

    def synced(self) -> None:
        """Wait for the fdatasync of the last record(wait=False); raises its OSError."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def close(self) -> None:
        try:
            self.synced()
        except OSError:
            pass
        if self._syncer is not None:
            self._syncer.shutdown()
            self._syncer = None
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
