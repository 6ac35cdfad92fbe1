"""Memory per active agent, and the CPU of folding a replicated event into the book, in one process.

    python scripts/bench_agent_memory.py [--agents 2000] [--events-per-agent 3] [--observe 30000]

1. Runs the node's committer (node/ingest.py Committer, with the budget book and the anomaly
   watch, on a temp SQLite file) over --agents new agents x --events-per-agent ACT events each,
   after a warm-up of 1,000 other agents, and prints the Python memory it kept (tracemalloc, after
   a GC) per agent and the biggest allocation sites. This is what grows with the agents a node has
   seen (their rules, counters and detectors), bounded by the caches' limits (docs/operations.md).
2. Folds --observe replicated events (act/dat/cpt from 1,000 agents, another origin) into a fresh
   book with BudgetBook.observe, three passes, and prints thread CPU µs per event.
Under the platformium plan, as scripts/bench_ingest.py's node. A temp dir under /tmp, removed at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import random
import shutil
import sys
import tempfile
import time
import tracemalloc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ledger.events import parse_envelope  # noqa: E402
from node.anomaly import AnomalyWatch  # noqa: E402
from node.budgets import BudgetBook  # noqa: E402
from node.clock import SystemClock  # noqa: E402
from node.config import Config  # noqa: E402
from node.ingest import Committer  # noqa: E402
from node.metrics import NodeMetrics  # noqa: E402
from node.ownlog import OwnLog  # noqa: E402
from node.store.sqlite import InlineDatabase  # noqa: E402
from tests.agentkit import TestAgent  # noqa: E402


async def open_book(tmp: str, cfg: Config) -> tuple[InlineDatabase, OwnLog, BudgetBook]:
    db = InlineDatabase(os.path.join(tmp, f"ledger-{time.monotonic_ns()}.sqlite"))
    await db.open()
    own = OwnLog(os.urandom(32))
    now = SystemClock().now_ms()
    await db.write(own.open, now)
    book = BudgetBook.from_config(cfg, own.public_key)
    await db.write(book.load, now)
    return db, own, book


async def per_agent(tmp: str, cfg: Config, agents: int, per: int) -> None:
    db, own, book = await open_book(tmp, cfg)
    metrics = NodeMetrics(lambda: own.size, lambda: own.checkpoint_size)
    watch = AnomalyWatch(metrics, threshold_milli=cfg.anomaly_threshold_milli,
                         warmup_events=cfg.anomaly_warmup_events, agents_max=cfg.anomaly_agents_max)
    committer = Committer(db, own, SystemClock(), metrics, events_max=500, linger_ms=0, skew_ms=3_600_000,
                          book=book, anomalies=watch, nonce=os.urandom)
    committer.start()

    async def feed(n: int) -> None:
        keys = [TestAgent() for _ in range(n)]
        envs = [parse_envelope(a.envelope("act", {"op": "x", "cost": 1})) for _ in range(per) for a in keys]
        for i in range(0, len(envs), 500):
            await committer.submit(envs[i:i + 500])

    try:
        await feed(1000)  # warm-up: caches, imports, first allocations
        gc.collect()
        tracemalloc.start(1)
        before = tracemalloc.take_snapshot()
        await feed(agents)
        gc.collect()
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
    finally:
        await committer.stop()
        await db.close()
    stats = after.compare_to(before, "lineno")
    total = sum(s.size_diff for s in stats)
    print(f"memory kept: {total / 1e6:.2f} MB for {agents:,} agents x {per} events = {total / agents:,.0f} B per agent")
    for s in stats[:10]:
        frame = s.traceback[0]
        print(f"  {s.size_diff / 1e3:8.0f} kB {s.count_diff:7d} objects  {os.path.relpath(frame.filename)}:{frame.lineno}")


async def observe_cpu(tmp: str, cfg: Config, n: int) -> None:
    db, _own, book = await open_book(tmp, cfg)
    rng = random.Random(1)
    agents = [TestAgent(rng.randbytes(32)) for _ in range(1000)]
    mix = [("act", {"op": "llm.call", "cost": 1000, "units": 10})] * 7 + [
        ("dat", {"src": b"a" * 32, "dst": b"b" * 32, "read": 10, "written": 20, "dur": 5}),
        ("cpt", {"node": "n1", "cpu": 5, "gpu": 0, "mem": 10, "jobs": 1})]
    events = [parse_envelope(rng.choice(agents).envelope(*rng.choice(mix))).event for _ in range(n)]
    origin, now = os.urandom(32), SystemClock().now_ms()

    def run(conn) -> float:
        t = time.thread_time()
        for ev in events:
            book.observe(conn, ev, now, origin=origin)
        return time.thread_time() - t

    try:
        for i in range(3):
            s = await db.write(run)
            print(f"BudgetBook.observe: {s / n * 1e6:.1f} us of thread CPU per event (pass {i + 1}; the first loads the rules)")
    finally:
        await db.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", type=int, default=2000)
    ap.add_argument("--events-per-agent", type=int, default=3)
    ap.add_argument("--observe", type=int, default=30_000, help="replicated events folded (0: skip)")
    args = ap.parse_args()
    cfg = Config(default_plan="platformium")
    tmp = tempfile.mkdtemp(prefix="ats-bench-agent-memory-")
    try:
        asyncio.run(per_agent(tmp, cfg, args.agents, args.events_per_agent))
        if args.observe:
            asyncio.run(observe_cpu(tmp, cfg, args.observe))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
