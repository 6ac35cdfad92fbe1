"""Strict and optimistic budgets over thousands of seeded simulated schedules.

    python scripts/bench_strict_sim.py [--runs 10000] [--utilisation-runs 1000] [--first-seed 0]

Each seed draws a cluster of 3, 5 or 7 nodes, message delay, loss, duplication and reordering,
partitions and heals, crashes and restarts, and demand at 10x the budget (tests/sim/escrow/sim.py:
every node runs the escrow engine of consensus/escrow.py); every step is checked against the union
of all accepted events and the rights conserved. Prints:

* strict overspend over all runs (target 0) — a broken invariant stops the run and prints its seed;
* optimistic overspend on the same schedules: runs that overspend, the largest and mean overspend
  in % of the capacity, and what is left after the debt is carried into the next window;
* utilisation without partitions or crashes: the share of the budget admitted before the first
  final refusal (an agent gave up after retrying for 2 s; target >= 99 %), before the first 429 of
  any kind, and by the window's end; and how many windows' first final refusal was of an event
  that the rights left in the cluster could still have admitted (rights that did not gather in time);
* schedules per second.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.sim.escrow.sim import SimFailure, run_seed  # noqa: E402


def pct(x: float) -> str:
    return f"{100 * x:.2f} %"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=10_000)
    ap.add_argument("--utilisation-runs", type=int, default=1_000)
    ap.add_argument("--first-seed", type=int, default=0)
    args = ap.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.runs)

    started = time.monotonic()
    strict_over = windows = 0
    sizes: dict[int, int] = {}
    for seed in seeds:
        try:
            r = run_seed(seed)
        except SimFailure as e:
            print(f"FAIL {e}")
            return 1
        strict_over += sum(r["overspend"])
        windows += len(r["overspend"])
        sizes[r["nodes"]] = sizes.get(r["nodes"], 0) + 1
    strict_s = time.monotonic() - started
    print(f"strict: {args.runs} schedules ({windows} windows; nodes {dict(sorted(sizes.items()))}),"
          f" overspend total {strict_over} (target 0); {args.runs / strict_s:.1f} schedules/s")

    started = time.monotonic()
    over_runs, over_pcts, settled_pcts = 0, [], []
    for seed in seeds:
        r = run_seed(seed, strict=False)
        worst = max(r["overspend"])
        over_runs += worst > 0
        over_pcts.append(worst / r["capacity"])
        settled_pcts.append(r["overspend_settled"] / r["capacity"])
    opt_s = time.monotonic() - started
    print(f"optimistic: {over_runs}/{args.runs} schedules overspend a window; worst window overspend"
          f" max {pct(max(over_pcts))}, mean {pct(statistics.mean(over_pcts))}, p99"
          f" {pct(sorted(over_pcts)[int(0.99 * (len(over_pcts) - 1))])} of the capacity;"
          f" after debt settlement (2 windows) max {pct(max(settled_pcts))}, mean {pct(statistics.mean(settled_pcts))};"
          f" {args.runs / opt_s:.1f} schedules/s")

    finals, firsts, ends, fit = [], [], [], 0
    for seed in range(args.first_seed, args.first_seed + args.utilisation_runs):
        r = run_seed(seed, partitions=False, crashes=False)
        finals += r["used_before_final_refusal"]
        firsts += r["used_before_first_refusal"]
        ends += r["utilisation"]
        fit += r["final_refusals_that_fit"]
    print(f"utilisation without partitions ({len(finals)} windows): before the first final refusal mean"
          f" {pct(statistics.mean(finals))}, p1 {pct(sorted(finals)[len(finals) // 100])} (target >= 99 %);"
          f" before the first 429 mean {pct(statistics.mean(firsts))}; by the window's end mean"
          f" {pct(statistics.mean(ends))}, min {pct(min(ends))}; first final refusals of an event the cluster's"
          f" remaining rights could still admit: {fit} of {len(finals)} windows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
