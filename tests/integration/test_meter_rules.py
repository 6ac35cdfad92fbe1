"""Who may sign a metered event about another agent (PROTOCOL.md §6), at admission and on replicas.

Node A lists key M as a meter; node B does not. An agent that names another agent is refused
(`not_meter`); a metered LLM call whose cost is not the table's price is refused
(`cost_mismatch`); A admits M's event about agent X, and B, replicating A's log, counts A's own
metered events about X but not M's: an origin cannot make a replica charge agents through a
meter the replica does not know.
"""

from __future__ import annotations

import os
import time

import pytest

from ledger.pricing import llm_cost_milli
from ledger.governance import DEFAULT_PRICES
from node.keys import read_key
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor
from tests.integration.nodeproc import NodeProcess

pytestmark = pytest.mark.integration
OPEN = {"ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "200"}


def _llm(agent: bytes, tokens_in: int, tokens_out: int, cost: int | None = None) -> dict:
    price = llm_cost_milli(DEFAULT_PRICES, "m1", tokens_in, tokens_out)
    return {"op": "llm.call", "agent": agent, "model": "m1", "tokens_in": tokens_in, "tokens_out": tokens_out,
            "units": tokens_in + tokens_out, "cost": price if cost is None else cost}


def _consumed(node: NodeProcess, agent: bytes, metric: str) -> int:
    budgets = get(node.url, f"/v1/agents/{agent.hex()}/balance").json()["budgets"]
    return next(b["consumed"] for b in budgets if b["metric"] == metric and b["scope"] == "agent")


def test_only_meters_sign_metered_events_and_replicas_apply_the_same_rule(tmp_path):
    meter = TestAgent()
    x = TestAgent().public_key
    a = NodeProcess(str(tmp_path / "a"), env={**OPEN, "ATS_METERS": meter.public_key.hex()}).start()
    b = None
    try:
        b = NodeProcess(str(tmp_path / "b"), env={**OPEN, "ATS_PEERS": a.url}).start()
        node_a = TestAgent(read_key(os.path.join(a.data_dir, "node.key")))

        rogue = post_cbor(a.url, "/v1/events", TestAgent().envelope("act", _llm(x, 10, 10)))
        assert (rogue.status, rogue.code) == (403, "not_meter")
        wrong = post_cbor(a.url, "/v1/events", node_a.envelope("act", _llm(x, 10, 10, cost=1)))
        assert (wrong.status, wrong.code) == (422, "cost_mismatch")

        own = post_cbor(a.url, "/v1/events", node_a.envelope("act", _llm(x, 100, 20)))
        by_meter = post_cbor(a.url, "/v1/events", meter.envelope("act", _llm(x, 1000, 0)))
        assert own.status == 201 and by_meter.status == 201
        assert _consumed(a, x, "act.llm_tokens") == 120 + 1000  # A lists M as a meter
        assert _consumed(a, node_a.public_key, "act.llm_tokens") == 0  # never the node

        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            origins = {o["origin"]: o["size"] for o in get(b.url, "/v1/cluster/digest").json()["origins"]}
            if origins.get(a.origin, 0) >= 2:
                break
            time.sleep(0.1)
        assert origins.get(a.origin, 0) >= 2, origins
        assert _consumed(b, x, "act.llm_tokens") == 120  # B counts A's own event, not M's
    finally:
        a.kill()
        if b is not None:
            b.kill()
