"""Admission decision cost in-process: the budget book deciding events for 10k registered agents.

    python scripts/bench_admission.py [--agents 10000] [--events 50000]

Builds a real SQLite ledger, registers N agents under users, teams and
platforms (full scope hierarchy: every event charges 4 scopes), warms the
counters, then times `BudgetBook.admit` (the decision and its in-memory
update, as the writer thread runs it) per event. Target: p99 ≤ 50 µs.

It runs twice in one process: with the plan defaults only, then with owner
budgets (docs/owner-budgets.md) on every scope: each agent its own monthly cost
budget (in Europe/Paris months, so calendar windows in a time zone are timed
too), every team a monthly cost and a daily token budget, every platform a
monthly cost budget. The second line is the issue-12 figure; the ratio of the
two is the cost of owner budgets, less noisy than either alone.

A third line times the writer's book as scripts/bench_ingest.py drives it: 1,000
unregistered agents under the node's default plan (platformium), each event
charging its agent scope only. With --cpu the times are the thread's CPU time
(time.thread_time_ns) rather than wall time: on a shared machine other processes
then do not count.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ledger.events import Event, make_event_bytes, parse_event, unsigned_event  # noqa: E402
from ledger.signing import public_key_from_seed  # noqa: E402
from node.budgets import BudgetBook  # noqa: E402
from node.store.sqlite import open_database  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=10_000)
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--cpu", action="store_true", help="time each admit in thread CPU time, not wall time")
    args = ap.parse_args()
    base = run(args, owner_budgets=False)
    owned = run(args, owner_budgets=True)
    run(args, owner_budgets=False, ingest=True)
    print(f"p99 with owner budgets / without: {owned / base:.2f}")
    print(f"target p99 ≤ 50 µs with per-agent, team and platform budgets: {'met' if owned <= 50 else 'NOT met'}")


def run(args: argparse.Namespace, *, owner_budgets: bool, ingest: bool = False) -> float:
    rng = random.Random(args.seed)
    clock = time.thread_time_ns if args.cpu else time.perf_counter_ns
    authority = public_key_from_seed(bytes([1]) * 32)
    node_key = public_key_from_seed(bytes([2]) * 32)
    with tempfile.TemporaryDirectory() as tmp:
        conn = open_database(os.path.join(tmp, "ledger.sqlite"), "normal")
        book = BudgetBook(node_key=node_key, authorities=(authority,), oracles=(), threshold=1, unregistered="default",
                          default_plan="platformium" if ingest else "freemium", enforce=True)
        now = int(time.time() * 1000)
        agents = [rng.randbytes(32) for _ in range(1000 if ingest else args.agents)]
        users = [rng.randbytes(32) for _ in range(max(1, args.agents // 100))]
        plans = ["freemium", "casual", "premium", "platformium"]
        for i, agent in enumerate([] if ingest else agents):
            body = {"agent": agent, "user": users[i % len(users)], "team": f"team-{i % 20}",
                    "platform": f"platform-{i % 5}", "plan": plans[i % 4]}
            book.admit(conn, _policy(authority, body, now), now)
        if owner_budgets:
            records = [("agent", a.hex(), "cost", "month", 10**9, "Europe/Paris") for a in agents]
            records += [(s, f"team-{i}", m, w, 10**12, None) for i in range(20)
                        for s, m, w in (("team", "cost", "month"), ("team", "tokens", "day"))]
            records += [("platform", f"platform-{i}", "cost", "month", 10**13, None) for i in range(5)]
            for scope, scope_id, metric, window, limit, tz in records:
                body = {"scope": scope, "id": scope_id, "metric": metric, "window": window, "limit": limit,
                        "soft_pct": 90, **({"tz": tz} if tz else {})}
                _out, refused = book.admit(conn, parse_event(make_event_bytes("budget.set", authority, now, os.urandom(16), body)), now)
                assert refused is None
        kinds = [
            ("act", lambda: {"op": rng.choice(["llm.call", "agent.run", "tool.browser"]), "cost": rng.randrange(1, 500), "units": rng.randrange(0, 100)}),
            ("dat", lambda: {"src": bytes(32), "dst": bytes(32), "read": rng.randrange(0, 1000), "written": rng.randrange(0, 1000), "dur": 1}),
            ("cpt", lambda: {"node": "n1", "cpu": rng.randrange(0, 2), "gpu": 0, "mem": 10, "jobs": 1}),
        ]
        events = []
        for _ in range(args.events):
            kind, body = rng.choice(kinds)
            events.append(unsigned_event(kind, rng.choice(agents), now, body()))
        # warm: one event of each kind per agent loads its counters, rules and reputation once, as a
        # running node has them after the first event of a window; the timed run is the steady state
        for agent in agents:
            for kind, body in kinds:
                book.admit(conn, unsigned_event(kind, agent, now, body()), now)
        times = []
        rejected = 0
        for ev in events:
            t0 = clock()
            _out, rejection = book.admit(conn, ev, now)
            times.append(clock() - t0)
            rejected += rejection is not None
        times.sort()
        p = lambda q: times[min(len(times) - 1, int(q * len(times)))] / 1000  # noqa: E731
        what = "owner budgets on every agent, team and platform" if owner_budgets else "plan defaults only"
        if ingest:
            print(f"[as bench_ingest: unregistered agents, plan platformium] agents {len(agents)}; events {len(events)};"
                  f" rejected {rejected}")
        else:
            print(f"[{what}] agents {args.agents}, users {len(users)}, teams 20, platforms 5; events {len(events)};"
                  f" rejected {rejected}")
        print(f"  admit (decision + in-memory update), µs{' of CPU' if args.cpu else ''}: p50 {p(0.5):.1f}  p90 {p(0.9):.1f}  p99 {p(0.99):.1f}"
              f"  max {times[-1] / 1000:.1f}  mean {statistics.fmean(times) / 1000:.1f}")
        conn.close()
        return p(0.99)


def _policy(signer: bytes, body: dict, now: int) -> Event:
    return unsigned_event("agent.register", signer, now, body)


if __name__ == "__main__":
    main()
