"""`ats verify-db`: recheck a data folder's whole log against its last checkpoint.

For every origin log in the file: each entry's envelope is parsed (canonical
CBOR, schema), its signature checked, its stored id and index checked, and its
leaf hashed; the tree rebuilt from those leaves must give the root of the last
signed checkpoint, whose signature must verify with the origin's key, and the
stored tree hashes must give the same root. Reads only: safe on a running node.

The quick check (`ats backup --quick`, `ats restore --quick`) skips the per-event parse and
signature check, the costly part: each envelope is still hashed into its leaf and the rebuilt
tree must give the signed root, so any changed byte of any entry is still found; the stored
event id is checked against the SHA-256 of the event bytes read from the envelope's map. It
answers "is this copy intact?", not "were these events ever valid?" (checked at admission).
"""

from __future__ import annotations

import hashlib
import os
import sys
from concurrent.futures import ThreadPoolExecutor

import cbor2

from ledger.checkpoint import open_checkpoint
from ledger.errors import LedgerError
from ledger.events import parse_envelope
from ledger.merkle import Frontier, leaf_hash
from ledger.signing import verify
from node.progress import Progress
from node.store import logs as log_store
from node.store import merkle as merkle_store
from node.store.sqlite import Connection, connect

CHUNK = 2000


class VerifyFailed(Exception):
    pass


def _quick_chunk(rows: list[tuple[int, bytes, bytes]]) -> list[bytes]:
    """Leaf hashes of rows (index, event_id, envelope), ids checked, no signatures; raises VerifyFailed."""
    leaves = []
    for idx, event_id, envelope in rows:
        try:
            event = cbor2.loads(envelope)["event"]
        except (ValueError, KeyError, TypeError, cbor2.CBORDecodeError):
            raise VerifyFailed(f"entry {idx}: the envelope is not a CBOR map with an event") from None
        if not isinstance(event, bytes) or hashlib.sha256(event).digest() != event_id:
            raise VerifyFailed(f"entry {idx}: stored id does not match the event's SHA-256")
        leaves.append(leaf_hash(envelope))
    return leaves


def _check_chunk(rows: list[tuple[int, bytes, bytes]]) -> list[bytes]:
    """Leaf hashes of rows (index, event_id, envelope); raises VerifyFailed."""
    leaves = []
    for idx, event_id, envelope in rows:
        try:
            env = parse_envelope(envelope)
            verify(env.event.raw, env.sig, env.event.signer)
        except LedgerError as e:
            raise VerifyFailed(f"entry {idx}: {e.code}: {e.message}") from None
        if env.event.id != event_id:
            raise VerifyFailed(f"entry {idx}: stored id does not match the event's SHA-256")
        leaves.append(leaf_hash(envelope))
    return leaves


def verify_origin(conn: Connection, origin_id: int, public_key: bytes, pool: ThreadPoolExecutor, show: bool,
                  quick: bool = False) -> int:
    """Verify one origin log; returns its checkpointed size; raises VerifyFailed."""
    cp_row = log_store.latest_checkpoint(conn, origin_id)
    if cp_row is None:
        raise VerifyFailed(f"origin {public_key.hex()}: no checkpoint")
    try:
        cp, _others = open_checkpoint(cp_row.note, public_key)
    except LedgerError as e:
        raise VerifyFailed(f"origin {public_key.hex()}: checkpoint does not verify: {e.message}") from None
    size = cp.size
    progress = Progress(size, f"verify {public_key.hex()[:12]}", enabled=show)
    frontier = Frontier()
    expected = 0
    futures = []

    def drain(fut) -> None:
        for leaf in fut.result():
            frontier.append(leaf)
        progress.advance(len(fut.result()))

    last = -1
    while expected < size:
        rows = log_store.entries_with_ids(conn, origin_id, expected, min(size, expected + CHUNK))
        if not rows:
            raise VerifyFailed(f"origin {public_key.hex()}: entry {expected} is missing")
        for idx, _eid, _env in rows:
            if idx != last + 1:
                raise VerifyFailed(f"origin {public_key.hex()}: entry {last + 1} is missing")
            last = idx
        futures.append(pool.submit(_quick_chunk if quick else _check_chunk, rows))
        expected = last + 1
        while len(futures) > 8:
            drain(futures.pop(0))
    for fut in futures:
        drain(fut)
    progress.finish()
    if frontier.root() != cp.root:
        raise VerifyFailed(f"origin {public_key.hex()}: the entries' tree root differs from the signed checkpoint at size {size}")
    if size and merkle_store.tree_hash_at(conn, origin_id, size) != cp.root:
        raise VerifyFailed(f"origin {public_key.hex()}: the stored tree hashes differ from the signed checkpoint")
    return size


def verify_data_dir(data_dir: str, *, quiet: bool = False) -> int:
    """Exit code 0 if every origin log verifies, 1 otherwise (message on stderr)."""
    path = os.path.join(data_dir, "ledger.sqlite")
    if not os.path.exists(path):
        print(f"ats: no ledger at {path}", file=sys.stderr)
        return 2
    return verify_ledger(path, quiet=quiet)


def verify_ledger(path: str, *, quiet: bool = False, quick: bool = False) -> int:
    """verify_data_dir for one ledger file (a data folder's, or a backup); quick: no signatures (above)."""
    conn = connect(path, readonly=True)
    show = not quiet and sys.stderr.isatty()
    try:
        with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
            total = 0
            for origin_id, public_key, _size in log_store.list_origins(conn):
                size = verify_origin(conn, origin_id, public_key, pool, show, quick)
                total += size
                print(f"ok   origin {public_key.hex()} size {size}")
    except VerifyFailed as e:
        print(f"FAIL {e}", file=sys.stderr)
        return 1
    finally:
        conn.close()
    print(f"verified {total} entries")
    return 0
