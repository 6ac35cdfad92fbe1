"""What the superblock (node/superblock.py) costs the writer: commits with and without it, one run.

    python scripts/bench_superblock.py [--commits 300] [--batches 1,10,100] [--rounds 4] [--contend]

The node's own append path (node/store/logs.py append_batch, synchronous=full as the node's default,
signed by node/ingest.py OwnLog.sign) in this process, on a temp data dir under /tmp. For each batch
size (events per commit, i.e. per signed checkpoint), rounds rotate between three modes (--commits
commits each), so machine noise hits them alike: the superblock flushed before the COMMIT ("serial",
the node before stop 10), flushed on its own thread while the COMMIT flushes ("overlap", what the
node's Committer does: OwnLog.sign_overlapped, then OwnLog.synced), and no superblock ("off"). It
prints commits/s of each and the ratios to "off". One event per commit is the worst case: one more
fdatasync per checkpoint. --contend adds a thread writing and fsyncing 256 KiB in a loop in the same
folder, as other writers on a shared disk do.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
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


def contend(path: str, stop: threading.Event) -> None:
    """Another writer on the same disk: 256 KiB written and fsynced, over and over, until stop."""
    block = os.urandom(256 * 1024)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        while not stop.is_set():
            os.pwrite(fd, block, 0)
            os.fsync(fd)
    finally:
        os.close(fd)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commits", type=int, default=300, help="commits per round")
    ap.add_argument("--batches", default="1,10,100", help="events per commit, comma-separated")
    ap.add_argument("--rounds", type=int, default=4, help="rounds per mode (rotating)")
    ap.add_argument("--contend", action="store_true", help="another writer fsyncing in the same folder")
    args = ap.parse_args(argv)
    data = tempfile.mkdtemp(prefix="ats-bench-sb-")
    stop = threading.Event()
    contender = threading.Thread(target=contend, args=(os.path.join(data, "contender"), stop), daemon=True)
    if args.contend:
        contender.start()
    try:
        conn = open_database(os.path.join(data, "ledger.sqlite"))
        own = OwnLog(os.urandom(32), path_for(data))
        own.open(conn, int(time.time() * 1000))
        sb = own.superblock
        assert sb is not None and own.read_only_reason is None
        agent = os.urandom(32)
        print(f"data dir {data} (synchronous=full); {args.commits} commits per round, {args.rounds} rounds per mode"
              f"{'; another writer fsyncing beside it' if args.contend else ''}")
        print(f"{'events/commit':>13} {'serial c/s':>11} {'overlap c/s':>12} {'off c/s':>9} {'serial/off':>11} {'overlap/off':>12}")
        modes = ("serial", "overlap", "off")
        for batch in [int(b) for b in args.batches.split(",")]:
            pool = envelopes(batch * args.commits * args.rounds * len(modes), agent, int(time.time() * 1000))
            rates: dict[str, list[float]] = {m: [] for m in modes}
            for r in range(args.rounds * len(modes)):
                mode = modes[r % len(modes)]
                own.superblock = None if mode == "off" else sb
                signer = own.sign_overlapped if mode == "overlap" else own.sign
                chunk = pool[r * batch * args.commits : (r + 1) * batch * args.commits]
                t0 = time.perf_counter()
                for c in range(args.commits):
                    envs = chunk[c * batch : (c + 1) * batch]
                    own.frontier, _ = log_store.append_batch(conn, own.origin_id, own.frontier, envs,
                                                             int(time.time() * 1000), signer)
                    own.synced()
                rates[mode].append(args.commits / (time.perf_counter() - t0))
            serial, overlap, off = (statistics.median(rates[m]) for m in modes)
            print(f"{batch:>13} {serial:>11,.0f} {overlap:>12,.0f} {off:>9,.0f} {serial / off:>11.2f} {overlap / off:>12.2f}",
                  flush=True)
        own.superblock = sb
        conn.close()
        own.close()
    finally:
        stop.set()
        if args.contend:
            contender.join()
        shutil.rmtree(data, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
