"""This node's own origin log in memory: its frontier, its latest checkpoint, and the superblock.

`OwnLog.open` checks the database against the last signed checkpoint and the superblock at
start (docs/integrity.md) and turns the node read-only, with the reason, when it cannot trust it;
`sign` records every checkpoint in the superblock before it can be served.
"""

from __future__ import annotations

import logging
import random

from ledger.checkpoint import CheckpointSigner, open_checkpoint, origin_line
from ledger.errors import InvariantViolation, LedgerError, check
from ledger.merkle import EMPTY_ROOT, Frontier
from ledger.signing import public_key_from_seed
from node import superblock
from node.startcheck import check_own_log
from node.store import logs as log_store
from node.store import merkle as merkle_store
from node.store import peers as peer_store
from node.store.sqlite import Connection, flush_wal
from node.superblock import FILE_NAME, Record, Superblock, SuperblockError

logger = logging.getLogger("ats.ingest")


class OwnLog:
    """This node's origin log: its row, frontier and latest checkpoint, in memory.

    With a superblock path (node/superblock.py) every checkpoint it signs is recorded
    there before the transaction holding it commits, and `open` refuses to sign again
    (read-only) if the database lost a part of the log the node already signed.
    """

    def __init__(self, seed: bytes, superblock_path: str | None = None, check_entries: int = 0,
                 rng: random.Random | None = None):
        self.seed = seed
        self.public_key = public_key_from_seed(seed)
        self.origin_line = origin_line(self.public_key)
        self._signer = CheckpointSigner(seed)
        self.origin_id = 0
        self.frontier: Frontier | None = None
        self.checkpoint_note = ""
        self.checkpoint_size = 0
        self.read_only_reason: str | None = None
        self.superblock_path = superblock_path
        self.superblock: Superblock | None = None
        self.check_entries = check_entries  # node/startcheck.py: newest and sampled entries checked at open
        self._rng = rng or random.Random()

    @property
    def size(self) -> int:
        return self.frontier.size if self.frontier else 0

    def sign(self, size: int, root: bytes, *, wait: bool = True) -> str:
        """The signed checkpoint note; recorded in the superblock first (inside the caller's
        transaction, so before the note can be committed or served). With wait=False the
        record's flush overlaps the caller's COMMIT, and the caller must call `synced` after
        it, before anything of the batch is served."""
        note = self._signer.sign(size, root)
        if self.superblock is not None:
            try:
                self.superblock.record(size, root, wait=wait)
            except OSError as e:
                raise InvariantViolation(f"cannot record the signed checkpoint in {self.superblock.path}: {e}") from None
        return note

    def sign_overlapped(self, size: int, root: bytes) -> str:
        return self.sign(size, root, wait=False)

    def synced(self) -> None:
        """Wait for the superblock's flush started by sign_overlapped (after the COMMIT)."""
        if self.superblock is not None:
            try:
                self.superblock.synced()
            except OSError as e:
                raise InvariantViolation(f"cannot record the signed checkpoint in {self.superblock.path}: {e}") from None

    def unsign(self) -> None:
        """After a rolled-back append: the superblock goes back to the checkpoint the database holds
        (the note signed for the batch was never committed nor served)."""
        if self.superblock is not None and self.frontier is not None:
            self.superblock.record(self.size, self.frontier.root())

    def close(self) -> None:
        if self.superblock is not None:
            self.superblock.close()

    def open(self, conn: Connection, now_ms: int) -> None:
        """Load the frontier (O(log n) reads) and check it against the last signed checkpoint (P4),
        the superblock, and (startup_check) the newest entries and a sample.

        A failed check does not stop the node: it serves reads and refuses
        writes (`read_only`), so an operator can inspect it and run verify-db.
        """
        self.origin_id, size = log_store.ensure_origin(conn, self.public_key)
        latest = log_store.latest_checkpoint(conn, self.origin_id)
        recorded = self._read_superblock()
        mine = recorded if isinstance(recorded, Record) and recorded.origin == self.public_key else None
        if mine is not None and mine.size > size:
            # checked first, so that the message names the cause rather than its symptoms
            self._refuse_lost(mine.size, size)
        if latest is None and size == 0 and recorded is not False and (mine is None or mine.size == 0):
            note = self.sign(0, EMPTY_ROOT)
            log_store.store_checkpoint(conn, self.origin_id, 0, EMPTY_ROOT, note, now_ms)
            latest = log_store.latest_checkpoint(conn, self.origin_id)
        if latest is not None:
            self.checkpoint_note = latest.note
            self.checkpoint_size = latest.size
        try:
            check(latest is not None, "a non-empty log has a checkpoint")
            self.frontier = merkle_store.load_frontier(conn, self.origin_id, size)
            cp, _others = open_checkpoint(latest.note, self.public_key)  # type: ignore[union-attr]
            check(cp.size == size, f"last checkpoint size {cp.size} equals log size {size}")
            check(cp.root == self.frontier.root(), "stored tree root equals the last signed checkpoint's root")
        except LedgerError as e:
            self._refuse(f"startup check failed: {e.message}", "run `ats verify-db`")
        if self.read_only_reason is None and self.check_entries:
            problems = check_own_log(conn, self.origin_id, self.public_key, size, self.frontier.root(),
                                     self.check_entries, self._rng)
            if problems:
                more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
                self._refuse(f"startup check failed: {problems[0]}{more}", "run `ats verify-db`")
        if recorded is not False:
            self._check_superblock(conn, recorded)
        if self.public_key in peer_store.forked_origins(conn):
            self._refuse("this node's key signed two different logs (fork evidence in GET /v1/forks)",
                         "start the node with a new key")

    def _refuse(self, reason: str, then: str) -> None:
        if self.read_only_reason is None:
            self.read_only_reason = f"{reason}; {then}"
        logger.critical("%s; serving reads only (%s)", reason, then)

    def _refuse_lost(self, signed: int, held: int) -> None:
        self._refuse(
            f"this node signed a checkpoint at size {signed} (recorded in {self.superblock_path}) but its database"
            f" holds {held} entries: acknowledged entries were lost (a deleted or truncated ledger.sqlite-wal?),"
            " and signing again would fork this node's log", SAFE_PATHS)

    def _read_superblock(self) -> "Record | None | bool":
        """The superblock's record; None if there is none; False if it is unreadable (node refuses)."""
        if self.superblock_path is None:
            return None
        try:
            recorded, valid = superblock.read(self.superblock_path)
        except (SuperblockError, OSError) as e:
            self._refuse(f"the superblock is unreadable: {e}", SAFE_PATHS)
            return False
        if recorded is not None and valid < 2:
            logger.warning("%s: one of its two slots is damaged; using the other", self.superblock_path)
        return recorded

    def _check_superblock(self, conn: Connection, recorded: "Record | None") -> None:
        """Refuse to sign below the largest checkpoint ever signed; open (or start) the superblock."""
        path = self.superblock_path
        if path is None:
            return
        if recorded is None:
            if log_store.meta_get(conn, "superblock") is not None:
                self._refuse(f"the superblock {path} is missing: this node cannot tell whether its database lost"
                             " signed entries", SAFE_PATHS)
                return
            if self.read_only_reason is None:
                # first start, or a data folder from before superblocks: start it from the log as it is,
                # and mark the database (flushed into the main file) as having one
                self.superblock = Superblock.create(path, self.public_key, self.size, self.frontier.root())
                log_store.meta_set(conn, "superblock", FILE_NAME)
                flush_wal(conn)
            return
        if self.read_only_reason is not None:
            return
        if recorded.origin != self.public_key:
            # a new node key in an old folder: the old key signs nothing here any more, so its
            # record cannot be forked by this node; this key's log starts its own record
            logger.warning("the superblock %s was of node key %s; starting one for this key", path, recorded.origin.hex())
            self.superblock = Superblock.create(path, self.public_key, self.size, self.frontier.root())  # type: ignore[union-attr]
            return
        if recorded.size > self.size:
            self._refuse_lost(recorded.size, self.size)
            return
        if merkle_store.tree_hash_at(conn, self.origin_id, recorded.size) != recorded.root:
            self._refuse(
                f"the database's log at size {recorded.size} has another root than the checkpoint this node signed"
                f" at that size (recorded in {path}): the log was replaced", SAFE_PATHS)
            return
        self.superblock = Superblock(path, recorded)
        self.superblock.record(self.size, self.frontier.root())  # type: ignore[union-attr]


# The message's advice when the node finds it cannot trust its database (docs/integrity.md).
SAFE_PATHS = ("safe paths: restore the whole data folder from a copy holding every signed entry, or move it aside"
              " and start the node with a new key (peers keep its old log); see docs/integrity.md")
