"""How fast `ats verify-db` rechecks a large ledger, and what the node's start-up check costs.

    python scripts/bench_verify.py [--events 100000] [--agents 10000] [--data DIR] [--runs 5] [--checks 250,1000] [--skip-verify]

a. Build (or reuse --data): a data dir written by the node's own writer step, as
   scripts/bench_node.py builds it (Committer._write with the budget book, default_plan=platformium,
   batches of 5000), so counters and tree hashes are exactly what a node writes.
b. verify-db: node/verifydb.py check_data_dir in this process (what `ats verify-db --quiet` runs),
   with the settings the build used; prints the seconds and entries/s of the log phase (entries,
   signatures, columns, every tree hash, checkpoints) and of the counter replay, and that it found
   nothing.
c. Start-up: node/ingest.py OwnLog.open on a writer connection (frontier, superblock, start-up
   check), --runs times each with startup_check_entries=0 and each of --checks, alternating;
   medians and the differences, which are the start-up check's cost at this size.
The temp data dir (under /tmp) is removed at the end unless --data was given.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_node import SKEW_MS, build  # noqa: E402
from node.config import load  # noqa: E402
from node.ingest import OwnLog  # noqa: E402
from node.keys import load_or_create  # noqa: E402
from node.store.sqlite import open_database  # noqa: E402
from node.superblock import path_for  # noqa: E402
from node.verifydb import check_data_dir  # noqa: E402

PLAN = "platformium"


def open_time(data: str, check_entries: int) -> float:
    seed, _ = load_or_create(os.path.join(data, "node.key"))
    conn = open_database(os.path.join(data, "ledger.sqlite"))
    try:
        own = OwnLog(seed, path_for(data), check_entries)
        t0 = time.perf_counter()
        own.open(conn, int(time.time() * 1000))
        elapsed = time.perf_counter() - t0
        own.close()
        if own.read_only_reason:
            raise SystemExit(f"the node would start read-only: {own.read_only_reason}")
        return elapsed
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--data", help="data dir to reuse (or build into, and keep)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--checks", default="250,1000", help="startup_check_entries values to time against 0")
    ap.add_argument("--skip-verify", action="store_true", help="only time the start-up check")
    args = ap.parse_args(argv)
    base = None if args.data else tempfile.mkdtemp(prefix="ats-bench-verify-", dir="/tmp")
    data = os.path.abspath(args.data) if args.data else os.path.join(base, "data")
    try:
        if not os.path.exists(os.path.join(data, "ledger.sqlite")):
            build(data, args.events, args.agents, PLAN, True)
        config = load(None, {**os.environ, "ATS_DEFAULT_PLAN": PLAN, "ATS_SKEW_MS": str(SKEW_MS)}, {"data_dir": data})
        report = {"ok": True}
        if not args.skip_verify:
            report = check_data_dir(data, config, show=False)
            n = report["entries"]
            logs, counters = report["seconds_logs"], report["seconds_counters"]
            print(f"[b] verify-db: {n:,} entries, {report['counters']:,} counters, {report['differences']} differences;"
                  f" {report['seconds']:.1f} s = {n / report['seconds']:,.0f} entries/s"
                  f" (log phase {logs:.1f} s = {n / logs:,.0f}/s on {os.cpu_count()} cores;"
                  f" counter replay {counters:.1f} s = {n / counters:,.0f}/s)", flush=True)
        counts = [0] + [int(c) for c in args.checks.split(",")]
        times: dict[int, list[float]] = {c: [] for c in counts}
        open_time(data, 0)  # warm the page cache, create the superblock
        for _ in range(args.runs):
            for count in counts:
                times[count].append(open_time(data, count))
        off = statistics.median(times[0])
        print(f"[c] OwnLog.open: {off * 1000:.1f} ms without the start-up check (medians of {args.runs})", flush=True)
        for count in counts[1:]:
            on = statistics.median(times[count])
            print(f"    startup_check_entries={count} (newest {count} + {count} sampled): {on * 1000:.1f} ms,"
                  f" the check costs {(on - off) * 1000:.1f} ms", flush=True)
        return 0 if report["ok"] else 1
    finally:
        if base:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
