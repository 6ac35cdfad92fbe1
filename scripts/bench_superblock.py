"""What the superblock (node/superblock.py) costs the writer: commits with and without it, one run.

    python scripts/bench_superblock.py [--commits 300] [--batches 1,10,100] [--rounds 4]

The node's own append path (node/store/logs.py append_batch, synchronous=full as the node's default,
signed by node/ingest.py OwnLog.sign) in this process, on a temp data dir under /tmp. For each batch
size (events per commit, i.e. per signed checkpoint), rounds alternate with the superblock on and off
(--commits commits each), so machine noise hits both alike; prints commits/s and events/s of each and
the ratio on/off. One event per commit is the worst case: one more fdatasync per checkpoint.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ledger.events import make_envelope_bytes, make_event_bytes, parse_envelope  # noqa: E402
from ledger.signing import public_key_from_seed, sign  # noqa: E402
from node.ingest import OwnLog  # noqa: E402
from node.store import logs as log_store  # noqa: E402
from node.store.sqlite import open_database  # noqa: E402
from node.superblock import path_for  # noqa: E402


def envelopes(n: int, seed: bytes, ts: int) -> list:
    signer = public_key_from_seed(seed)
    out = []
    for i in range(n):
        raw = make_event_bytes("act", signer, ts + i, os.urandom(16), {"op": "llm.call", "cost": 100 + i % 7, "units": 10})
        out.append(parse_envelope(make_envelope_bytes(raw, sign(raw, seed))))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=300, help="commits per round")
    ap.add_argument("--batches", default="1,10,100", help="events per commit, comma-separated")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per mode (alternating on/off)")
    args = ap.parse_args(argv)
    data = tempfile.mkdtemp(prefix="ats-bench-sb-")
    try:
        conn = open_database(os.path.join(data, "ledger.sqlite"))
        own = OwnLog(os.urandom(32), path_for(data))
        own.open(conn, int(time.time() * 1000))
        sb = own.superblock
        assert sb is not None and own.read_only_reason is None
        agent = os.urandom(32)
        print(f"data dir {data} (synchronous=full); {args.commits} commits per round, {args.rounds} rounds per mode")
        print(f"{'events/commit':>13} {'on commits/s':>13} {'off commits/s':>14} {'on events/s':>12} {'off events/s':>13} {'ratio on/off':>13}")
        for batch in [int(b) for b in args.batches.split(",")]:
            pool = envelopes(batch * args.commits * args.rounds * 2, agent, int(time.time() * 1000))
            rates: dict[bool, list[float]] = {True: [], False: []}
            for r in range(args.rounds * 2):
                on = r % 2 == 0
                own.superblock = sb if on else None
                chunk = pool[r * batch * args.commits : (r + 1) * batch * args.commits]
                t0 = time.perf_counter()
                for c in range(args.commits):
                    envs = chunk[c * batch : (c + 1) * batch]
                    own.frontier, _ = log_store.append_batch(conn, own.origin_id, own.frontier, envs,
                                                             int(time.time() * 1000), own.sign)
                rates[on].append(args.commits / (time.perf_counter() - t0))
            on, off = statistics.median(rates[True]), statistics.median(rates[False])
            print(f"{batch:>13} {on:>13,.0f} {off:>14,.0f} {on * batch:>12,.0f} {off * batch:>13,.0f} {on / off:>13.2f}",
                  flush=True)
        own.superblock = sb
        conn.close()
        own.close()
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
