"""The writer survives a batch that SQLite cannot store (issue 10, class 2).

Before: an event whose amount was at or above 2^63 reached `append_batch`, Python's sqlite3 raised
OverflowError (not a sqlite3.Error), the committer task died, that request got 503 `not_ready` and
every later one hung while /healthz said ok. Admission now refuses such amounts (ledger.events);
here the old path is driven directly, with a body built past the parser, on the real committer and
a real SQLite file: the batch fails alone with `storage_error`, nothing is written, the next batch
commits.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import pytest

from ledger.errors import NotReady
from ledger.events import parse_envelope
from node.budgets import BudgetBook
from node.clock import SystemClock
from node.config import load
from node.ingest import Committer, OwnLog
from node.metrics import NodeMetrics
from node.store.sqlite import Database
from tests.agentkit import TestAgent


def _over_int64(agent: TestAgent):
    """An envelope whose parsed body claims an amount SQLite cannot hold (as before the bounds)."""
    env = parse_envelope(agent.envelope(body={"op": "tool.x", "cost": 1, "units": 1}))
    body = dataclasses.replace(env.event.body, units=2**63)  # not an LLM call: no budget counts it
    return dataclasses.replace(env, event=dataclasses.replace(env.event, body=body))


async def test_a_batch_sqlite_cannot_store_fails_alone_and_the_writer_goes_on(tmp_path: Path) -> None:
    clock = SystemClock()
    db = Database(str(tmp_path / "ledger.sqlite"))
    await db.open()
    own = OwnLog(bytes(range(32)))
    await db.write(own.open, clock.now_ms())
    book = BudgetBook.from_config(load(env={}), own.public_key)
    await db.write(book.load, clock.now_ms())
    committer = Committer(db, own, clock, NodeMetrics(lambda: own.size, lambda: own.checkpoint_size),
                          events_max=100, linger_ms=1, skew_ms=300_000, book=book)
    committer.start()
    try:
        agent = TestAgent()
        with pytest.raises(NotReady) as e:
            await committer.submit([_over_int64(agent)])
        assert e.value.code == "storage_error"
        assert own.size == 0 and own.read_only_reason is None
        started = time.monotonic()
        for _ in range(3):
            (outcome,) = await committer.submit([parse_envelope(agent.envelope())])
            assert outcome.receipt and outcome.receipt["status"] == "accepted"
        assert time.monotonic() - started < 10
        assert own.size == 3
    finally:
        await committer.stop()
        await db.close()
