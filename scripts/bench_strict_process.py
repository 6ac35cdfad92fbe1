"""Strict mode on real node processes: overspend under real partitions, availability, admission latency.

    python scripts/bench_strict_process.py [--runs 100] [--seed 1] [--latency-events 4000]

Needs root and iproute2: three `ats node` processes, each in its own network namespace
(tests/netns/cluster.py), with `act.runs` strict among them (casual plan: 100 runs a day per
agent). Each run uses a fresh agent (a fresh strict budget) and a seeded partition of the three
nodes; agents on every node demand 4x the budget while cut, then 6x after the heal (retrying
`no_rights`); the union of every node's SQLite log is read back after each phase. Prints:

* strict overspend over all runs (target 0), what was used while cut and in the end;
* availability without partitions: runs of one busy node (demand on node 0 only), the share of
  the budget admitted before its first final refusal (target >= 99 %) and before its first 429;
* the extra admission latency of strict mode, in-process (BudgetBook.admit, rights local):
  p50/p99 with and without strict `act.runs` (target: p99 extra <= 1 ms).
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

from ledger.events import parse_envelope  # noqa: E402
from node.budgets import BudgetBook  # noqa: E402
from node.escrow import EscrowBook  # noqa: E402
from node.store.sqlite import open_database  # noqa: E402
from tests.agentkit import TestAgent  # noqa: E402
from tests.netns.test_strict import (  # noqa: E402
    CAPACITY, KEYS, RUN, burst, results, run_partition_scenario, strict_cluster, union_runs,
)

PARTITIONS = ([[0, 1], [2]], [[0, 2], [1]], [[1, 2], [0]], [[0], [1], [2]], [[0, 1, 2]])


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def processes(runs: int, seed: int) -> None:
    rng = random.Random(seed)
    over, cut_used, end_used = 0, [], []
    with tempfile.TemporaryDirectory() as tmp, strict_cluster(tmp) as c:
        started = time.monotonic()
        for _ in range(runs):
            groups = rng.choice(PARTITIONS)
            try:
                figures = run_partition_scenario(c, TestAgent(), groups)
            except AssertionError as e:
                over += 1
                print(f"  FAIL {groups}: {e}")
                c.heal_all()
                continue
            cut_used.append(figures["partitioned"] / CAPACITY)
            end_used.append(figures["total"] / CAPACITY)
        took = time.monotonic() - started
        print(f"processes: {runs} runs (3 nodes, real partitions {sorted(set(map(str, PARTITIONS)))[:2]}...),"
              f" runs overspent {over} (target 0); used while cut mean {pct(statistics.mean(cut_used))},"
              f" after heal mean {pct(statistics.mean(end_used))}, min {pct(min(end_used))}; {took / runs:.1f} s/run")
        finals, firsts = [], []
        for _ in range(max(3, runs // 10)):
            agent = TestAgent()
            out = results([burst(c, 0, [agent.envelope("act", RUN) for _ in range(2 * CAPACITY)], retries=10)])[0]
            accepted = out.count("accepted")
            final = next((i for i, code in enumerate(out) if code != "accepted"), len(out))
            finals.append(out[:final].count("accepted") / CAPACITY)
            firsts.append(accepted / CAPACITY)
            assert union_runs(c, agent.public_key) <= CAPACITY
        print(f"availability without partitions, one busy node ({len(finals)} runs): used before the first final"
              f" refusal mean {pct(statistics.mean(finals))}, min {pct(min(finals))} (target >= 99 %);"
              f" used in all mean {pct(statistics.mean(firsts))}")


def latency(events: int) -> None:
    now = int(time.time() * 1000)
    agents = [TestAgent() for _ in range(max(1, events // 25))]  # 25 runs each: within every share
    envs = [parse_envelope(agents[i % len(agents)].envelope("act", RUN)).event for i in range(events)]
    figures = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, strict in (("optimistic", ()), ("strict", ("act.runs",))):
            conn = open_database(os.path.join(tmp, f"{name}.sqlite"), "normal")
            escrow = EscrowBook(KEYS[0], strict=strict, members=tuple(KEYS))
            book = BudgetBook(node_key=KEYS[0], authorities=(), oracles=(), threshold=0, unregistered="default",
                              default_plan="casual", enforce=True, escrow=escrow)
            book.load(conn, now)
            for ev in envs[:200]:  # warm: rule caches and counters
                book.admit(conn, ev, now, dry_run=True)
            samples = []
            for ev in envs:
                t0 = time.perf_counter_ns()
                _out, refusal = book.admit(conn, ev, now)
                samples.append(time.perf_counter_ns() - t0)
                assert refusal is None, refusal
            conn.close()
            samples.sort()
            figures[name] = (samples[len(samples) // 2] / 1e3, samples[int(0.99 * (len(samples) - 1))] / 1e3)
    extra = figures["strict"][1] - figures["optimistic"][1]
    print(f"admission latency (BudgetBook.admit, rights local, {events} events): optimistic p50"
          f" {figures['optimistic'][0]:.1f} us p99 {figures['optimistic'][1]:.1f} us; strict p50"
          f" {figures['strict'][0]:.1f} us p99 {figures['strict'][1]:.1f} us; extra p99 {extra:.1f} us"
          f" (target <= 1000 us)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--latency-events", type=int, default=4000)
    args = ap.parse_args()
    latency(args.latency_events)
    processes(args.runs, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
