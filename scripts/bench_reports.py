"""Time of a usage report (node/reports.py) over a ledger of --events events, and the anomaly hook's cost.

    python scripts/bench_reports.py [--events 100000] [--agents 200] [--batch 1000]

Builds a ledger with `Committer._write` (the writer's real path; the budget book charges counters, enforcement off) with and without
the anomaly watch, events spread over one day (7 ACT : 1 DAT : 1 CPT), then times the day report
of the node (every agent), of one team, and of one agent, read as the API reads them (writer
snapshot, then a reader connection). Prints ms per report and the writer's µs/event.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ledger.events import parse_envelope  # noqa: E402
from ledger.windows import DAY_MS  # noqa: E402
from node.anomaly import AnomalyWatch  # noqa: E402
from node.budgets import BudgetBook  # noqa: E402
from node.clock import SystemClock  # noqa: E402
from node.ingest import Committer, OwnLog  # noqa: E402
from node.metrics import NodeMetrics  # noqa: E402
from node.reports import Reports  # noqa: E402
from node.store.sqlite import Database, open_database  # noqa: E402
from tests.agentkit import TestAgent  # noqa: E402


def build(path: str, envs: list, now: int, batch: int, anomalies: bool, seed: bytes) -> float:
    conn = open_database(path, "normal")
    own = OwnLog(seed)
    own.open(conn, now)
    book = BudgetBook(node_key=own.public_key, authorities=(), oracles=(), threshold=0,
                      unregistered="default", default_plan="platformium", enforce=False)
    book.load(conn, now)
    metrics = NodeMetrics(lambda: 0, lambda: 0)
    watch = AnomalyWatch(metrics, threshold_milli=3500, warmup_events=32, agents_max=10_000) if anomalies else None
    committer = Committer(None, own, SystemClock(), metrics, events_max=10**6, linger_ms=0, skew_ms=2 * DAY_MS,
                          book=book, anomalies=watch)
    t0 = time.perf_counter()
    for i in range(0, len(envs), batch):
        _r, frontier, _n, _a = committer._write(conn, envs[i : i + batch], now)
        own.frontier = frontier
    conn.close()
    return (time.perf_counter() - t0) / len(envs) * 1e6


async def time_reports(path: str, now: int, agent_hex: str) -> None:
    db = Database(path, synchronous="normal", reader_threads=2)
    await db.open()
    seed = b"\x01" * 32
    own = OwnLog(seed)
    await db.write(own.open, now)
    book = BudgetBook(node_key=own.public_key, authorities=(), oracles=(), threshold=0,
                      unregistered="default", default_plan="platformium", enforce=False)
    await db.write(book.load, now)
    reports = Reports(db, book)
    try:
        for scope, sid in (("node", "all"), ("agent", agent_hex)):
            runs = []
            for _ in range(3):
                t0 = time.perf_counter()
                doc = await reports.report(scope, sid, "day", now)
                runs.append((time.perf_counter() - t0) * 1000)
            events = sum(t["events"] for t in doc["totals"].values())
            print(f"day report of {scope} {sid[:12]}: {events} events, {min(runs):.0f} ms (best of 3), "
                  f"{min(runs) * 1000 / max(1, events):.2f} µs/event")
    finally:
        await db.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=100_000)
    ap.add_argument("--agents", type=int, default=200)
    ap.add_argument("--batch", type=int, default=1000)
    args = ap.parse_args()
    agents = [TestAgent() for _ in range(args.agents)]
    bodies = {
        "act": {"op": "llm.call", "cost": 10, "units": 5},
        "dat": {"src": bytes(32), "dst": bytes(32), "read": 4096, "written": 1024, "dur": 1},
        "cpt": {"node": "n1", "cpu": 2, "gpu": 0, "mem": 1, "jobs": 1},
    }
    kinds = ["act"] * 7 + ["dat", "cpt"]
    now = int(time.time() * 1000)
    start = now - now % DAY_MS
    span = max(1, now - start)
    print(f"signing {args.events} events from {args.agents} agents over today ...", flush=True)
    envs = [parse_envelope(agents[i % args.agents].envelope(
        kinds[i % len(kinds)], bodies[kinds[i % len(kinds)]], start + i * span // args.events)) for i in range(args.events)]
    with tempfile.TemporaryDirectory() as tmp:
        plain = build(os.path.join(tmp, "plain.sqlite"), envs, now, args.batch, False, os.urandom(32))
        path = os.path.join(tmp, "ledger.sqlite")
        watched = build(path, envs, now, args.batch, True, b"\x01" * 32)
        print(f"writer: {plain:.1f} µs/event without the anomaly watch, {watched:.1f} with it"
              f" ({watched - plain:+.1f} µs/event)")
        asyncio.run(time_reports(path, now, agents[0].public_key.hex()))


if __name__ == "__main__":
    main()
