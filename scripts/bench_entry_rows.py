"""What one stored entry row costs SQLite, and what each index of `entries` adds to it.

    python scripts/bench_entry_rows.py [--events 60000] [--per-commit 500] [--synchronous FULL]

Builds the node's `entries` table (node/store/schema.py: WITHOUT ROWID, primary key (origin, idx))
in temp files, with and without its secondary indexes, and inserts --events rows shaped like the
node's (a random 32-byte event id, one of 1,000 signers, a 230-byte envelope, a ~300-byte stored
receipt) in transactions of --per-commit rows, WAL mode and the node's synchronous setting. Prints
the time per row of INSERT + COMMIT for each variant, including an 8-byte integer prefix of the
event id in place of the 32-byte id index (a schema change the node has not made). Figures from
one run are comparable with each other; a temp dir under /tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time

TABLE = ("CREATE TABLE entries (origin INTEGER NOT NULL, idx INTEGER NOT NULL, event_id BLOB NOT NULL,"
         " signer BLOB NOT NULL, kind TEXT NOT NULL, ts INTEGER NOT NULL, envelope BLOB NOT NULL, m0 INTEGER,"
         " m1 INTEGER, m2 INTEGER, m3 INTEGER, accepted_ms INTEGER, budgets BLOB, subject BLOB, ek INTEGER,"
         " PRIMARY KEY (origin, idx)) WITHOUT ROWID;")
EVENT_ID = "CREATE INDEX e_id ON entries (event_id);"
SIGNER = "CREATE INDEX e_signer ON entries (signer, ts);"
OTHERS = ("CREATE INDEX e_subject ON entries (subject, kind) WHERE subject IS NOT NULL;"
          " CREATE INDEX e_policy ON entries (origin, idx) WHERE kind NOT IN ('act', 'dat', 'cpt', 'trt');")
VARIANTS = {
    "as the node (all four indexes)": EVENT_ID + SIGNER + OTHERS,
    "without the event_id index": SIGNER + OTHERS,
    "without the (signer, ts) index": EVENT_ID + OTHERS,
    "event_id as an 8-byte integer prefix": "CREATE INDEX e_ek ON entries (ek);" + SIGNER + OTHERS,
    "no secondary index": "",
}


def run(path: str, ddl: str, events: int, per: int, synchronous: str) -> tuple[float, float]:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute(f"PRAGMA synchronous={synchronous}")
    conn.execute("PRAGMA cache_size=-16000")  # the node's writer cache
    conn.executescript(TABLE + ddl)
    rng = random.Random(7)
    signers = [rng.randbytes(32) for _ in range(1000)]
    receipt = rng.randbytes(300)
    now = int(time.time() * 1000)
    spent = 0.0
    for start in range(0, events, per):
        rows = []
        for i in range(start, start + per):
            eid = os.urandom(32)
            rows.append((1, i, eid, rng.choice(signers), "act", now + i, os.urandom(230), 1, 0, 0, 0, now, receipt,
                         None, int.from_bytes(eid[:8], "big", signed=True)))
        t = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.execute("COMMIT")
        spent += time.perf_counter() - t
    conn.close()
    return spent / events * 1e6, os.path.getsize(path) / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=60_000)
    ap.add_argument("--per-commit", type=int, default=500)
    ap.add_argument("--synchronous", choices=("FULL", "NORMAL"), default="FULL")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="ats-bench-entry-rows-")
    try:
        print(f"{args.events:,} rows in commits of {args.per_commit}, synchronous={args.synchronous}")
        for n, (name, ddl) in enumerate(VARIANTS.items()):
            us, mb = run(os.path.join(tmp, f"{n}.sqlite"), ddl, args.events, args.per_commit, args.synchronous)
            print(f"  {name:40s} {us:6.1f} us per row (INSERT + COMMIT), file {mb:.0f} MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
