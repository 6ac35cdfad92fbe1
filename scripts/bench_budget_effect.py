"""The cost of budgets on the ingest writer, with and without the budget book, in one run.

    python scripts/bench_budget_effect.py [--events 30000] [--agents 1000] [--batch 1000] [--rounds 3]

The writer thread is the ingest bottleneck (scripts/bench_ingest.py: it is busy most of a batch
run), so this times exactly what it runs per batch — `Committer._write`: duplicate lookup, clock
rule, budget decisions, one append transaction with tree hashes, counters and a signed checkpoint —
on two fresh SQLite ledgers, one with the budget book and one without, alternating rounds so
machine noise hits both. Prints µs/event for each and the slowdown. Target: ≤ 10 % slower.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ledger.events import parse_envelope  # noqa: E402
from node.budgets import BudgetBook  # noqa: E402
from node.clock import SystemClock  # noqa: E402
from node.ingest import Committer, OwnLog  # noqa: E402
from node.metrics import NodeMetrics  # noqa: E402
from node.store.sqlite import open_database  # noqa: E402
from tests.agentkit import TestAgent  # noqa: E402


def writer(tmp: str, name: str, with_budgets: bool, now: int):
    conn = open_database(os.path.join(tmp, f"{name}.sqlite"), "full")
    own = OwnLog(os.urandom(32))
    own.open(conn, now)
    book = None
    if with_budgets:
        book = BudgetBook(node_key=own.public_key, authorities=(), oracles=(), threshold=0,
                          unregistered="default", default_plan="platformium", enforce=True)
        book.load(conn, now)
    committer = Committer(None, own, SystemClock(), NodeMetrics(lambda: 0, lambda: 0), events_max=10**6,
                          linger_ms=0, skew_ms=3_600_000, book=book)
    return conn, own, committer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=30_000)
    ap.add_argument("--agents", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=1000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    agents = [TestAgent() for _ in range(args.agents)]
    bodies = {
        "act": {"op": "llm.call", "cost": 10, "units": 5},
        "dat": {"src": bytes(32), "dst": bytes(32), "read": 10, "written": 10, "dur": 1},
        "cpt": {"node": "n1", "cpu": 0, "gpu": 0, "mem": 1, "jobs": 1},
    }
    kinds = ["act"] * 7 + ["dat", "cpt"]
    total = args.events * args.rounds * 2
    print(f"signing {total} events from {args.agents} agents ...", flush=True)
    envs = [parse_envelope(agents[i % args.agents].envelope(kinds[i % len(kinds)], bodies[kinds[i % len(kinds)]]))
            for i in range(total)]
    now = int(time.time() * 1000)
    results: dict[str, list[float]] = {"without budgets": [], "with budgets": []}
    with tempfile.TemporaryDirectory() as tmp:
        setups = {"without budgets": writer(tmp, "plain", False, now), "with budgets": writer(tmp, "budgets", True, now)}
        cursor = 0
        for _round in range(args.rounds):
            for name, (conn, own, committer) in setups.items():
                chunk = envs[cursor : cursor + args.events]
                cursor += args.events
                t0 = time.perf_counter()
                for i in range(0, len(chunk), args.batch):
                    _results, frontier, _note, _alerts = committer._write(conn, chunk[i : i + args.batch], now)
                    own.frontier = frontier
                results[name].append((time.perf_counter() - t0) / len(chunk) * 1e6)
        for conn, _own, _c in setups.values():
            conn.close()
    plain = statistics.median(results["without budgets"])
    budgets = statistics.median(results["with budgets"])
    for name, runs in results.items():
        print(f"{name:16s} writer µs/event, rounds: {', '.join(f'{r:.1f}' for r in runs)}  median {statistics.median(runs):.1f}")
    slower = budgets / plain - 1
    print(f"budgets make the writer {slower:.0%} slower ({budgets - plain:.1f} µs/event); "
          f"target ≤ 10 %: {'met' if slower <= 0.10 else 'NOT met'}")


if __name__ == "__main__":
    main()
