"""Soak the gossip core in the deterministic simulation: many seeds, every invariant after every step.

    python scripts/bench_sim.py [--seeds 1000] [--start 0] [--nodes N]

Each seed plays one schedule (tests/sim/harness.py): 3-5 nodes (or N), agents submitting
to random nodes (some events to two nodes at once), partitions, heals, single cut links,
crashes and restarts, on a network with seeded delay, loss, duplication and reordering.
After every step the invariants are checked; after the last heal every node must converge.
Prints the failing seeds (replay one with `ATS_SIM_SEED=<seed> python -m pytest tests/sim`),
runs per second, and the totals of simulated time, events and network faults.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.sim.harness import InvariantFailed, Scenario, Simulation  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, default=1000)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--nodes", type=int, default=None)
    args = ap.parse_args()
    failed: list[int] = []
    virtual_s = events = requests = lost = duplicated = steps = 0.0
    started = time.perf_counter()
    for seed in range(args.start, args.start + args.seeds):
        with tempfile.TemporaryDirectory() as d:
            sim = Simulation(Scenario.from_seed(seed, args.nodes), d)
            try:
                sim.run()
            except InvariantFailed as e:
                failed.append(seed)
                print(f"FAIL seed {seed}: {str(e).splitlines()[0]}", flush=True)
                continue
            virtual_s += sim.end_s
            events += len(sim.accepted)
            requests += sim.net.requests
            lost += sim.net.lost
            duplicated += sim.net.duplicated
            steps += sim.steps
        done = seed - args.start + 1
        if done % 50 == 0:
            print(f"  {done}/{args.seeds} seeds, {len(failed)} failed, {done / (time.perf_counter() - started):.1f} runs/s",
                  file=sys.stderr, flush=True)
    wall = time.perf_counter() - started
    print(f"seeds: {args.seeds} (from {args.start}), nodes: {args.nodes or '3-5'}")
    print(f"failed: {len(failed)} {failed[:20]}")
    print(f"wall: {wall:.1f} s, {args.seeds / wall:.2f} runs/s")
    print(f"simulated: {virtual_s:.0f} s of cluster time ({virtual_s / wall:.0f}x real time), {steps:.0f} steps,"
          f" {events:.0f} acknowledged events")
    print(f"network: {requests:.0f} requests, {lost:.0f} lost or cut, {duplicated:.0f} duplicated")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
