"""The streaming anomaly detector (ledger/anomaly.py) on synthetic traces with injected spikes.

    python scripts/bench_anomaly.py [--agents 200] [--events 3000] [--seed 1] [--sigma 0.5]

Each agent sends a steady trace: Poisson arrivals (1 to 20 events/s) whose amounts are
log-normal (median 100 to 10 000, sigma --sigma) around its own level. Half the agents get one
injected 10× spike of 30 events, half in the amount (act.cost), half in the rate (gaps / 10),
after the warm-up. Prints the detection rate and delay (events and ms after the spike starts),
the false-positive rate (anomalies flagged on steady events, per event, and agents with any),
memory per tracked agent and ns per update. Targets: a 10× spike flagged within 5 events or
1 s; false-positive rate <= 1 %.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import statistics
import sys
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ledger.anomaly import THRESHOLD_DEFAULT, WARMUP_DEFAULT, AgentDetectors  # noqa: E402

SPIKE_EVENTS = 30
SPIKE_FACTOR = 10


def trace(rng: random.Random, events: int, sigma: float, spike: str | None) -> tuple[list[tuple[int, int]], int]:
    """[(ts_ms, amount)] of one agent, and the index where its spike starts (-1: none)."""
    level = math.exp(rng.uniform(math.log(100), math.log(10_000)))
    rate_per_s = rng.uniform(1, 20)
    start = rng.randrange(WARMUP_DEFAULT * 3, events - SPIKE_EVENTS) if spike else -1
    ts, out = 1_700_000_000_000, []
    for i in range(events):
        in_spike = spike is not None and start <= i < start + SPIKE_EVENTS
        gap = rng.expovariate(rate_per_s * (SPIKE_FACTOR if in_spike and spike == "rate" else 1)) * 1000
        ts += int(gap)
        amount = level * math.exp(rng.gauss(0, sigma)) * (SPIKE_FACTOR if in_spike and spike == "amount" else 1)
        out.append((ts, max(1, int(amount))))
    return out, start


def run(args: argparse.Namespace) -> None:
    rng = random.Random(args.seed)
    delays_ev: list[int] = []
    delays_ms: list[int] = []
    detected = {"amount": 0, "rate": 0}
    spiked = {"amount": 0, "rate": 0}
    steady_events = false_pos = 0
    agents_with_fp = 0
    updates = 0
    elapsed_ns = 0
    for a in range(args.agents):
        spike = None if a % 4 == 3 else ("amount" if a % 2 == 0 else "rate")
        events, start = trace(rng, args.events, args.sigma, spike)
        det = AgentDetectors()
        first_hit = None
        fp_here = 0
        t0 = time.perf_counter_ns()
        hits = [bool(det.observe(ts, {"act.cost": amount}, threshold=args.threshold, warmup=args.warmup))
                for ts, amount in events]
        elapsed_ns += time.perf_counter_ns() - t0
        updates += len(events)
        for i, hit in enumerate(hits):
            in_spike = spike is not None and start <= i < start + SPIKE_EVENTS + 8  # + the window draining
            if not in_spike:
                steady_events += 1
                fp_here += hit
            elif hit and first_hit is None:
                first_hit = i
        false_pos += fp_here
        agents_with_fp += fp_here > 0
        if spike is not None:
            spiked[spike] += 1
            if first_hit is not None:
                detected[spike] += 1
                delays_ev.append(first_hit - start + 1)
                delays_ms.append(events[first_hit][0] - events[start - 1][0])
    print(f"agents {args.agents}, events per agent {args.events}, amount sigma {args.sigma} (log-normal),"
          f" threshold {args.threshold}, warm-up {args.warmup}")
    for kind in ("amount", "rate"):
        print(f"10x {kind} spikes detected: {detected[kind]}/{spiked[kind]}"
              f" ({100 * detected[kind] / max(1, spiked[kind]):.1f} %)")
    if delays_ev:
        q = statistics.quantiles(delays_ev, n=20) if len(delays_ev) > 1 else [delays_ev[0]] * 19
        qm = statistics.quantiles(delays_ms, n=20) if len(delays_ms) > 1 else [delays_ms[0]] * 19
        print(f"detection delay, events (the spike's n-th event): median {statistics.median(delays_ev)}, p95 {q[18]:.0f},"
              f" max {max(delays_ev)}; within 5 events: {100 * sum(d <= 5 for d in delays_ev) / len(delays_ev):.1f} %")
        print(f"detection delay, ms after the spike starts: median {statistics.median(delays_ms):.0f}, p95 {qm[18]:.0f},"
              f" max {max(delays_ms)}; within 1 s: {100 * sum(d <= 1000 for d in delays_ms) / len(delays_ms):.1f} %;"
              f" within 5 events or 1 s: "
              f"{100 * sum(e <= 5 or m <= 1000 for e, m in zip(delays_ev, delays_ms)) / len(delays_ev):.1f} %")
    print(f"false positives on steady events: {false_pos}/{steady_events}"
          f" = {100 * false_pos / max(1, steady_events):.3f} % per event;"
          f" agents with any: {agents_with_fp}/{args.agents}")
    print(f"update cost: {elapsed_ns / updates:.0f} ns per event (act.cost and rate detectors)")
    memory(args)


def memory(args: argparse.Namespace) -> None:
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    agents = []
    for a in range(1000):
        det = AgentDetectors()
        for i in range(8):
            det.observe(i * 100, {"act.cost": 1000 + a, "act.llm_tokens": 50, "cpt.units": 3, "dat.bytes": 4096})
        agents.append(det)
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    used = sum(s.size_diff for s in after.compare_to(before, "filename"))
    print(f"memory: {used / 1000:.0f} bytes per tracked agent with 5 metrics (act.cost, act.llm_tokens,"
          f" cpt.units, dat.bytes, rate); {used / 5000:.0f} bytes per (agent, metric)")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--agents", type=int, default=200)
    p.add_argument("--events", type=int, default=3000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--sigma", type=float, default=0.5)
    p.add_argument("--threshold", type=float, default=THRESHOLD_DEFAULT)
    p.add_argument("--warmup", type=int, default=WARMUP_DEFAULT)
    run(p.parse_args())


if __name__ == "__main__":
    main()
