"""The long sweep of the pure replication simulation (tests/sim/pure/sim.py).

    python scripts/sim_sweep.py --seeds 100000 [--start 0] [--nodes 5]

Plays each seed (5 nodes by default: drops, delays, duplicates, partitions, crashes, then a heal
and convergence), checks every invariant after every step, and prints seeds/s, steps/s and every
failing seed with the command that replays it. Exits 1 if any seed failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from tests.sim.pure.sim import InvariantFailed, event_pool, run  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", type=int, default=10_000)
    ap.add_argument("--start", type=int, default=0)
    ap.add_argument("--nodes", type=int, default=5)
    ap.add_argument("--report-every", type=int, default=1_000)
    args = ap.parse_args()
    event_pool()
    failed: list[int] = []
    steps = 0
    started = time.monotonic()
    for i, seed in enumerate(range(args.start, args.start + args.seeds), 1):
        try:
            _digest, sim = run(seed, args.nodes)
            steps += sim.steps
        except InvariantFailed as e:
            failed.append(seed)
            print(f"FAILED {e}", flush=True)
        if i % args.report_every == 0:
            el = time.monotonic() - started
            print(f"{i} seeds in {el:.1f} s: {i / el:.1f} seeds/s, {steps / el:,.0f} steps/s, {len(failed)} failed",
                  flush=True)
    el = time.monotonic() - started
    print(f"\n{args.seeds} seeds x {args.nodes} nodes: {el:.1f} s, {args.seeds / el:.1f} seeds/s, {steps:,} steps "
          f"({steps / max(args.seeds, 1):.0f} per seed, {steps / el:,.0f}/s), failing seeds: {failed or 'none'}")
    for seed in failed[:20]:
        print(f"  replay: ATS_SIM_SEED={seed} python -m pytest tests/sim/pure -q -k replays_one_seed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
