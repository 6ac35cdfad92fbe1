"""Strict mode across real network cuts: every node's demand at 10x a strict budget, partition, heal.

Three nodes in their own namespaces (tests/netns/cluster.py); `act.runs` (casual plan: 100 runs a
day per agent) is strict among them. Agents submit from the hub namespace, which is never cut.
After each phase the union of every node's SQLite log (each event id once) is read back and must
never exceed the capacity; each side of a partition spends only the rights it holds.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys

import pytest

from ledger import escrow
from ledger.signing import public_key_from_seed
from node.keys import write_key
from tests.agentkit import TestAgent
from tests.integration.test_strict import union_runs as nodes_union_runs
from tests.netns.cluster import PORT, Cluster, peers_of
from tests.netns.conftest import require_netns

pytestmark = pytest.mark.netns

CAPACITY = 100
RUN = {"op": "agent.run", "cost": 1, "units": 0}
SEEDS = [bytes([0x50 + i]) * 32 for i in range(3)]
KEYS = [public_key_from_seed(s) for s in SEEDS]

_BURST = r"""
import base64, http.client, json, sys, time
a = json.load(sys.stdin)
c = http.client.HTTPConnection(a["host"], a["port"], timeout=10)
out = []
refused = 0
for env in a["envelopes"]:
    if refused >= a["give_up"]:
        break  # this many final refusals in a row: the agent stops for this window
    for attempt in range(a["retries"] + 1):
        try:
            c.request("POST", "/v1/events", body=base64.b64decode(env), headers={"Content-Type": "application/cbor"})
            r = c.getresponse()
            body = r.read()
        except (OSError, http.client.HTTPException) as e:
            c.close(); c = http.client.HTTPConnection(a["host"], a["port"], timeout=10)
            out.append("unreachable"); break
        code = "accepted" if r.status == 201 else json.loads(body)["error"]["code"]
        if code != "no_rights" or attempt == a["retries"]:
            out.append(code); refused = refused + 1 if code != "accepted" else 0; break
        time.sleep(int(r.getheader("Retry-After", "1")) / 20)  # a patient agent, scaled down
json.dump(out, sys.stdout)
"""


def strict_cluster(base_dir: str, n: int = 3) -> Cluster:
    env = lambda i: {"ATS_OPEN_MEMBERSHIP": "true", "ATS_PEERS": peers_of(i, n), "ATS_DISCOVERY": "off",
                     "ATS_REPLICATION_INTERVAL_MS": "200", "ATS_DEFAULT_PLAN": "casual",
                     "ATS_STRICT_BUDGETS": "act.runs", "ATS_STRICT_MEMBERS": ",".join(k.hex() for k in KEYS[:n]),
                     "ATS_STRICT_RETRY_MS": "50", "ATS_STRICT_WAIT_MS": "0", "ATS_READ_AUTH": "open"}
    c = Cluster(n, base_dir=base_dir, node_env=env)
    for i, node in enumerate(c.nodes):
        write_key(os.path.join(node.data_dir, "node.key"), SEEDS[i])
    return c


def burst(c: Cluster, i: int, envelopes: list[bytes], retries: int = 0) -> subprocess.Popen:
    """Submit envelopes to node i from the hub namespace, in one client process (started, not awaited)."""
    job = {"host": c.nodes[i].addr, "port": PORT, "retries": retries, "give_up": 10 if retries else 10**9,
           "envelopes": [base64.b64encode(e).decode() for e in envelopes]}
    p = subprocess.Popen(["ip", "netns", "exec", c.hub, sys.executable, "-I", "-c", _BURST],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    p.stdin.write(json.dumps(job))
    p.stdin.close()
    return p


def results(procs: list[subprocess.Popen], timeout_s: float = 60) -> list[list[str]]:
    out = []
    for p in procs:
        try:
            p.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
            raise
        out.append(json.loads(p.stdout.read()))
        p.stdout.close()
        p.stderr.close()
    return out


def union_runs(c: Cluster, agent: bytes) -> int:
    return nodes_union_runs(c.nodes, agent)


def spend_everywhere(c: Cluster, agent: TestAgent, per_node: int, retries: int = 0) -> list[list[str]]:
    return results([burst(c, i, [agent.envelope("act", RUN) for _ in range(per_node)], retries)
                    for i in range(len(c.nodes))])


def run_partition_scenario(c: Cluster, agent: TestAgent, groups: list[list[int]]) -> dict[str, int]:
    """Demand at 10x on every node while partitioned, then healed; returns the figures."""
    c.partition(groups)
    during = spend_everywhere(c, agent, 4 * CAPACITY // len(c.nodes))
    cut_total = union_runs(c, agent.public_key)
    assert cut_total <= CAPACITY, f"strict overspend while partitioned: {cut_total}"
    c.heal_all()
    after = spend_everywhere(c, agent, 6 * CAPACITY // len(c.nodes), retries=4)
    total = union_runs(c, agent.public_key)
    assert total <= CAPACITY, f"strict overspend after heal: {total}"
    codes = {code for out in during + after for code in out}
    assert codes <= {"accepted", "no_rights", "budget_exceeded"}, codes
    # "spent until the window ends" only once the whole budget was spent (the node's merged view)
    assert "budget_exceeded" not in codes or total == CAPACITY, (codes, total)
    return {"partitioned": cut_total, "total": total}


def test_strict_budget_holds_across_a_real_partition_and_heal(tmp_path) -> None:
    require_netns()
    with strict_cluster(str(tmp_path)) as c:
        agent = TestAgent()
        figures = run_partition_scenario(c, agent, [[0, 1], [2]])
        lone_share = escrow.share(CAPACITY, KEYS, KEYS[2])
        # the lone node spent at most its own share (it had nothing else: no demand before the cut)
        lone = json.loads(c.request(2, "GET", "/v1/escrow")[2])["keys"][0]
        assert lone["consumed"] <= lone["rights"] and lone["received"] == 0 and lone["share"] == lone_share
        assert figures["total"] >= CAPACITY * 95 // 100, figures
