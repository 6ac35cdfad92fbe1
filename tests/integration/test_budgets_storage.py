"""The budget book against its database after storage errors: what it holds in memory is what SQLite says."""

import os
import sqlite3

from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor
from tests.integration.nodeproc import NodeProcess
from tests.integration.waiting import wait_until

OPEN = {"ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "200"}
WAIT_S = 40


def _wait(what, predicate):
    return wait_until(what, predicate, WAIT_S)


def _consumed(node, agent_hex):
    """act.cost per window as the node's book holds it (GET balance reads the in-memory counters)."""
    doc = get(node.url, f"/v1/agents/{agent_hex}/balance").json()
    return {(b["window"], b["window_start"]): b["consumed"] for b in doc["budgets"]
            if b["scope"] == "agent" and b["metric"] == "act.cost"}


def _stored(node, agent_hex):
    """act.cost per window as the node's SQLite file holds it."""
    conn = sqlite3.connect(f"file:{os.path.join(node.data_dir, 'ledger.sqlite')}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT window, start_ms, amount FROM usage_counters WHERE scope = 'agent'"
                            " AND scope_id = ? AND metric = 'act.cost'", (agent_hex,)).fetchall()
    finally:
        conn.close()
    return {(w, s): a for w, s, a in rows}


def test_a_failed_store_of_replicated_entries_leaves_the_books_counters_as_the_database_says(tmp_path):
    """b pulls a's entries while another process holds b's SQLite write lock: the page's commit fails
    (busy timeout) after the book counted it; once the lock is gone the page is stored again. The
    counters b's book answers with must be those in b's database, each event counted once."""
    a = NodeProcess(str(tmp_path / "a"), host="127.0.0.2", env=OPEN).start()
    b = None
    try:
        b = NodeProcess(str(tmp_path / "b"), host="127.0.0.3", env={**OPEN, "ATS_PEERS": a.url}).start()
        agent = TestAgent()
        key = agent.public_key.hex()
        assert post_cbor(a.url, "/v1/events", agent.envelope("act", {"op": "llm.call", "cost": 100})).status == 201
        _wait("b to merge a's first event", lambda: sum(_consumed(b, key).values()) == 100)
        lock = sqlite3.connect(os.path.join(b.data_dir, "ledger.sqlite"), isolation_level=None, timeout=30)
        try:
            lock.execute("BEGIN IMMEDIATE")
            for _ in range(5):
                assert post_cbor(a.url, "/v1/events", agent.envelope("act", {"op": "llm.call", "cost": 100})).status == 201

            def store_failed():
                peers = get(b.url, "/v1/peers").json()["peers"]
                return any("locked" in (p["last_error"] or "") for p in peers)

            _wait("b's store of a's page to fail on the lock", store_failed)
        finally:
            lock.execute("ROLLBACK")
            lock.close()
        _wait("b to store a's page once the lock is gone", lambda: sum(_stored(b, key).values()) == 600)
        assert _consumed(b, key) == _stored(b, key)
        assert sum(_consumed(b, key).values()) == 600
        assert get(b.url, "/healthz").status == 200
    finally:
        if b is not None:
            b.kill()
        a.kill()
