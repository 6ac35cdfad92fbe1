"""The writer step in-process: thread CPU time per event of Committer._write and of BudgetBook.admit in it.

    python scripts/bench_writer.py [--batches 20] [--nogc]

Pre-signs --batches x 1000 events (act/dat/cpt/trt 7:1:1:1 from 1,000 unregistered agents under the
plan platformium, as scripts/bench_ingest.py's node sees them), then runs the node's writer step
(node/ingest.py Committer._write: duplicates, budgets, one append transaction) on each batch in this
process, with synchronous=normal so the figure is CPU, not fsync. Prints CPU µs per event of the
whole step and of the budget book's admission inside it. --nogc turns the cyclic GC off (its pauses
land on whatever allocates). A temp dir under /tmp, removed at the end.
"""
import argparse
import asyncio
import gc
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from ledger.events import parse_envelope  # noqa: E402
from node.budgets import BudgetBook  # noqa: E402
from node.clock import SystemClock  # noqa: E402
from node.config import load  # noqa: E402
from node.ingest import Committer, OwnLog  # noqa: E402
from node.metrics import NodeMetrics  # noqa: E402
from node.store.sqlite import Database  # noqa: E402
from tests.agentkit import TestAgent  # noqa: E402

SIZE = 1000
BATCHES = 20

async def main():
    rng = random.Random(1)
    agents = [TestAgent() for _ in range(1000)]
    kinds = [("act", lambda: {"op": "llm.call", "cost": rng.randrange(1, 500), "units": rng.randrange(0, 100)})] * 7 + [
        ("dat", lambda: {"src": bytes(32), "dst": bytes(32), "read": 10, "written": 5, "dur": 1}),
        ("cpt", lambda: {"node": "n1", "cpu": 1, "gpu": 0, "mem": 10, "jobs": 1}),
        ("trt", lambda: {"subject": bytes(32), "type": "feedback", "value": 100, "halflife": 3600})]
    batches = []
    for _ in range(BATCHES + 1):
        batch = []
        for _ in range(SIZE):
            k, body = rng.choice(kinds)
            batch.append(parse_envelope(rng.choice(agents).envelope(k, body())))
        batches.append(batch)
    with tempfile.TemporaryDirectory() as tmp:
        clock = SystemClock()
        db = Database(os.path.join(tmp, "ledger.sqlite"), synchronous="normal")
        await db.open()
        own = OwnLog(bytes(range(32)))
        await db.write(own.open, clock.now_ms())
        config = load(env={"ATS_DEFAULT_PLAN": "platformium"})
        book = BudgetBook.from_config(config, own.public_key)
        await db.write(book.load, clock.now_ms())
        committer = Committer(db, own, clock, NodeMetrics(lambda: own.size, lambda: own.checkpoint_size),
                              events_max=SIZE, linger_ms=1, skew_ms=3_600_000, book=book)
        admit_ns = [0]
        orig = book.admit
        def timed(*a, **k):
            t = time.thread_time_ns()
            r = orig(*a, **k)
            admit_ns[0] += time.thread_time_ns() - t
            return r
        book.admit = timed
        step = []
        def write(conn, envs):
            t = time.thread_time_ns()
            results, frontier, note, _alerts = committer._write(conn, envs, clock.now_ms())
            own.frontier, own.checkpoint_note, own.checkpoint_size = frontier, note, frontier.size
            step.append(time.thread_time_ns() - t)
            assert all(r.error is None for r in results), [r.error for r in results if r.error][:1]
        await db.write(write, batches[0])  # warm-up
        step.clear(); admit_ns[0] = 0
        for b in batches[1:]:
            await db.write(write, b)
        n = BATCHES * SIZE
        print(f"writer step (Committer._write), CPU µs/event: {sum(step) / n / 1000:.1f}; "
              f"of it BudgetBook.admit: {admit_ns[0] / n / 1000:.1f}  ({BATCHES} batches of {SIZE})")
        await db.close()

if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", type=int, default=20)
    ap.add_argument("--nogc", action="store_true")
    args = ap.parse_args()
    BATCHES = args.batches
    if args.nogc:
        gc.disable()
    asyncio.run(main())
