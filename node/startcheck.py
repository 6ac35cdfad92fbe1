"""The node's start-up check of its own log: what it can afford before serving (docs/integrity.md).

`ats verify-db` rechecks everything, in time proportional to the file. At start the node checks,
against its last signed checkpoint (whose root the frontier already gave, node/ingest.py):
- the newest `count` entries: envelope, signature, every derived column, and their stored tree
  hashes rebuilt from the frontier before them, which must give the signed root;
- `count` entries drawn at random from the rest: envelope, signature, derived columns, and an
  inclusion proof read from the stored tree hashes, checked against the signed root (so the
  interior hashes on each path are checked too).
Usage counters are not checked here (a counter sums a whole window of events; verify-db replays
them). Reads only; the caller turns the node read-only on any finding.
"""

from __future__ import annotations

import random

from ledger.errors import LedgerError
from ledger.merkle import verify_inclusion
from node.store import integrity as store
from node.store import merkle as merkle_store
from node.store.sqlite import Connection
from node.verifydb import Finding, check_rows

SAMPLE_QUERY_MAX = 500


def check_own_log(conn: Connection, origin_id: int, public_key: bytes, size: int, root: bytes, count: int,
                  rng: random.Random) -> list[str]:
    """Problems found in the newest `count` entries and `count` random others (empty: none)."""
    if size == 0 or count <= 0:
        return []
    hex_key = public_key.hex()
    start = max(0, size - count)
    rows = store.entry_rows(conn, origin_id, start, size)
    if [r[0] for r in rows] != list(range(start, size)):
        return [f"entries {start}..{size - 1} are not all present"]
    leaves, found = check_rows(hex_key, rows)
    problems = [_say(f) for f in found]
    try:
        frontier = merkle_store.load_frontier(conn, origin_id, start)
    except LedgerError as e:
        return problems + [e.message]
    first, hashes = frontier.extend(leaves)
    stored = store.stored_hashes(conn, origin_id, first, first + len(hashes))
    problems += [f"tree_hashes sidx={first + i}: stored {_hex(stored.get(first + i))}, expected {h.hex()}"
                 for i, h in enumerate(hashes) if stored.get(first + i) != h]
    if frontier.root() != root:
        problems.append(f"entries {start}..{size - 1} do not give the signed root at size {size}")
    sample = sorted(rng.sample(range(start), min(count, start)))
    for i in range(0, len(sample), SAMPLE_QUERY_MAX):
        rows = store.entry_rows_at(conn, origin_id, sample[i : i + SAMPLE_QUERY_MAX])
        if len(rows) != len(sample[i : i + SAMPLE_QUERY_MAX]):
            problems.append("a sampled entry is missing")
            continue
        leaves, found = check_rows(hex_key, rows)
        problems += [_say(f) for f in found]
        for row, leaf in zip(rows, leaves):
            try:
                proof = merkle_store.inclusion_proof_at(conn, origin_id, row[0], size)
            except LedgerError as e:
                problems.append(e.message)
                continue
            if not verify_inclusion(row[0], size, leaf, proof, root):
                problems.append(f"entry {row[0]} is not included in the signed tree by the stored tree hashes")
    return problems


def _hex(v: bytes | None) -> str:
    return v.hex() if v is not None else "nothing"


def _say(f: Finding) -> str:
    return f.text().removeprefix("DIFF ")
