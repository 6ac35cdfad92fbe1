"""Replication across real network cuts: nodes in their own namespaces, links cut and healed."""

from __future__ import annotations

import json
import time

import pytest

from tests.agentkit import TestAgent
from tests.netns.cluster import peers_of

pytestmark = pytest.mark.netns

CONVERGE_S = 30


def env_for(n):
    return lambda i: {"ATS_OPEN_MEMBERSHIP": "true", "ATS_PEERS": peers_of(i, n), "ATS_REPLICATION_INTERVAL_MS": "200",
                      "ATS_DISCOVERY": "off", "ATS_READ_AUTH": "open"}  # reads off loopback: docs/read-access.md


def submit(c, i, envelope):
    status, _h, body = c.request(i, "POST", "/v1/events", envelope, {"Content-Type": "application/cbor"})
    assert status == 201, body
    return json.loads(body)


def digest(c, i):
    status, _h, body = c.request(i, "GET", "/v1/cluster/digest")
    assert status == 200
    return json.loads(body)


def wait_same_digest(c, group, timeout_s=CONVERGE_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        docs = [digest(c, i) for i in group]
        if len({d["digest"] for d in docs}) == 1:
            return docs[0]
        time.sleep(0.2)
    raise AssertionError(f"group {group} did not converge: {[ [(o['origin'][:8], o['size']) for o in d['origins']] for d in docs]}")


def test_partition_2_2_each_side_converges_then_all_converge_after_heal(cluster):
    n = 4
    c = cluster(n, node_env=env_for(n))
    agent = TestAgent()
    c.partition([[0, 1], [2, 3]])
    for _ in range(3):
        submit(c, 0, agent.envelope())
        submit(c, 2, agent.envelope())
    left = wait_same_digest(c, [0, 1])
    right = wait_same_digest(c, [2, 3])
    assert left["digest"] != right["digest"]
    assert {o["origin"] for o in left["origins"]} == {c.nodes[0].origin}
    assert {o["origin"] for o in right["origins"]} == {c.nodes[2].origin}
    healed_at = time.monotonic()
    c.heal_all()
    done = wait_same_digest(c, list(range(n)))
    took = time.monotonic() - healed_at
    assert sorted(o["size"] for o in done["origins"]) == [3, 3]
    assert took < CONVERGE_S
    status, _h, body = c.request(3, "GET", f"/v1/agents/{agent.public_key.hex()}/usage")
    assert json.loads(body)["totals"]["act"]["count"] == 6


def test_isolated_node_catches_up_after_kill_and_rejoin(cluster):
    n = 3
    c = cluster(n, node_env=env_for(n))
    agent = TestAgent()
    c.isolate(2)
    for _ in range(5):
        submit(c, 0, agent.envelope())
    wait_same_digest(c, [0, 1])
    c.kill(2)
    c.rejoin(2)
    c.start(2)
    done = wait_same_digest(c, [0, 1, 2])
    assert [o["size"] for o in done["origins"]] == [5]
