"""The budget book's caches against a real SQLite file: bounded, and never answering other than the database."""

from __future__ import annotations

import os
import random

import pytest

import node.budgets as budgets_mod
from ledger.events import make_event_bytes, parse_event, unsigned_event
from ledger.signing import public_key_from_seed
from node.budgets import BudgetBook
from node.store import budgets as budget_store
from node.store.sqlite import open_database, transaction

AUTHORITY = public_key_from_seed(bytes([1]) * 32)
NODE = public_key_from_seed(bytes([2]) * 32)
NOW = 1_796_000_000_000


@pytest.fixture
def conn(tmp_path):
    c = open_database(os.path.join(tmp_path, "ledger.sqlite"), "normal")
    yield c
    c.close()


def book() -> BudgetBook:
    return BudgetBook(node_key=NODE, authorities=(AUTHORITY,), oracles=(), threshold=1, unregistered="default",
                      default_plan="freemium", enforce=True)


def commit(conn, b: BudgetBook, events, now=NOW):
    """As the committer does: admit a batch, then write its counter deltas in one transaction."""
    deltas: dict = {}
    for ev in events:
        out, refusal = b.admit(conn, ev, now)
        assert refusal is None
        for k, v in out.deltas.items():
            deltas[k] = deltas.get(k, 0) + v
    with transaction(conn):
        budget_store.add_counters(conn, deltas)


def stored(conn) -> dict:
    rows = conn.execute("SELECT scope, scope_id, metric, window, start_ms, amount FROM usage_counters").fetchall()
    return {tuple(r[:5]): r[5] for r in rows}


def test_counters_past_the_generation_bound_are_read_again_and_equal_the_database(conn, monkeypatch):
    monkeypatch.setattr(budgets_mod, "COUNTER_GENERATION_MAX", 16)
    b, rng = book(), random.Random(3)
    agents = [rng.randbytes(32) for _ in range(12)]
    for _ in range(6):
        commit(conn, b, [unsigned_event("act", rng.choice(agents), NOW, {"op": "llm.call", "cost": rng.randrange(1, 9),
                                                                         "units": 3}) for _ in range(10)])
    # two generations of 16 keys, plus what one batch wrote and has not committed when it rotates
    batch_keys = 10 * 8
    assert len(dict.keys(b.counters)) <= 16 + batch_keys and len(b.counters.old) <= 16 + batch_keys
    fresh = book()
    for key, amount in stored(conn).items():
        assert b.consumed(conn, key) == amount == fresh.consumed(conn, key)


def test_a_scopes_first_event_of_a_window_reads_its_counters_in_one_query(conn):
    b = book()
    agent = bytes([9]) * 32
    commit(conn, b, [unsigned_event("act", agent, NOW, {"op": "llm.call", "cost": 5, "units": 1})])
    queries = []
    conn.set_trace_callback(lambda sql: queries.append(sql) if "usage_counters" in sql else None)
    try:
        book().admit(conn, unsigned_event("act", agent, NOW, {"op": "llm.call", "cost": 5, "units": 1}), NOW)
    finally:
        conn.set_trace_callback(None)
    assert len(queries) == 1 and "CROSS JOIN" in queries[0]


def test_effective_limits_follow_a_scheduled_owner_budget_and_a_policy_record(conn):
    b = book()
    agent = bytes([5]) * 32
    hex_ = agent.hex()

    def limit(at_ms):
        ev = unsigned_event("act", agent, at_ms, {"op": "llm.call", "cost": 1, "units": 0})
        out, _ = b.admit(conn, ev, at_ms, dry_run=True)
        return {(v["source"], v["metric"], v["window"]): v["allocated"] for v in out.budgets}

    before = limit(NOW)
    body = {"scope": "agent", "id": hex_, "metric": "cost", "window": "day", "limit": 777, "effective": NOW + 10_000}
    out, refused = b.admit(conn, parse_event(make_event_bytes("budget.set", AUTHORITY, NOW, os.urandom(16), body)), NOW)
    assert refused is None
    assert limit(NOW + 9_999) == before  # not in force yet: the cached limits still hold
    assert limit(NOW + 10_000)[("budget.set", "act.cost", "day")] == 777  # in force from its effective time, no record needed
    b.admit(conn, unsigned_event("plan.assign", AUTHORITY, NOW, {"scope": "agent", "id": hex_, "plan": "premium"}), NOW)
    assert limit(NOW) != before  # a policy record invalidates the cache
