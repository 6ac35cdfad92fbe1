"""Strict mode on real node processes: rights in escrow, transfers over replication, never overspent.

Three nodes on 127.0.0.x replicate each other; `act.runs` (the casual plan: 100 runs a day per
agent) is strict among them. After each scenario every node's SQLite is read back and the union
of all origin logs (each event id once) is checked against the capacity.
"""

from __future__ import annotations

import base64
import json
import os
import sqlite3
import subprocess
import sys
import time

import pytest

from consensus.messages import peer_headers
from ledger import escrow
from ledger.events import parse_envelope
from ledger.signing import public_key_from_seed
from node.keys import write_key
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor, request
from tests.integration.nodeproc import NodeProcess

CAPACITY = 100  # casual plan: agent_runs_per_day, hard 100 %, no reserve
SEEDS = [bytes([0x40 + i]) * 32 for i in range(3)]
KEYS = [public_key_from_seed(s).hex() for s in SEEDS]
HOSTS = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
RUN = {"op": "agent.run", "cost": 1, "units": 0}


def strict_env(**extra: str) -> dict[str, str]:
    return {"ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "200", "ATS_DEFAULT_PLAN": "casual",
            "ATS_STRICT_BUDGETS": "act.runs", "ATS_STRICT_MEMBERS": ",".join(KEYS), "ATS_STRICT_RETRY_MS": "50",
            "ATS_STRICT_WAIT_MS": "0", **extra}


@pytest.fixture
def cluster(tmp_path):
    made: list[NodeProcess] = []
    ports: dict[int, int] = {}

    def start(i: int, peers: list[NodeProcess], **extra: str) -> NodeProcess:
        data = str(tmp_path / f"n{i}")
        if not os.path.exists(os.path.join(data, "node.key")):
            write_key(os.path.join(data, "node.key"), SEEDS[i])
        env = strict_env(ATS_PEERS=",".join(p.url for p in peers), **extra)
        # a free port the first time; a restarted node keeps its address, which its peers know
        node = NodeProcess(data, host=HOSTS[i], port=ports.get(i, 0), env=env)
        made.append(node)
        node.start()
        ports[i] = node.port
        return node

    yield start
    for n in made:
        n.kill()


def start_three(start, **extra: str) -> list[NodeProcess]:
    a = start(0, [], **extra)
    b = start(1, [a], **extra)
    c = start(2, [a, b], **extra)
    return [a, b, c]


def union_runs(nodes: list[NodeProcess], agent: bytes) -> int:
    """agent.run events of this agent in the union of every node's logs, each id once."""
    ids = set()
    for n in nodes:
        conn = sqlite3.connect(os.path.join(n.data_dir, "ledger.sqlite"))
        try:
            for (envelope,) in conn.execute("SELECT envelope FROM entries WHERE kind = 'act'"):
                ev = parse_envelope(envelope).event
                if ev.signer == agent and ev.body.op == "agent.run":
                    ids.add(ev.id)
        finally:
            conn.close()
    return len(ids)


def spend(node: NodeProcess, agent: TestAgent, tries: int) -> tuple[int, dict[str, int]]:
    """Submit up to `tries` runs; (accepted, refusal codes)."""
    accepted, codes = 0, {}
    for _ in range(tries):
        reply = post_cbor(node.url, "/v1/events", agent.envelope("act", RUN))
        if reply.status == 201:
            accepted += 1
        else:
            codes[reply.code] = codes.get(reply.code, 0) + 1
    return accepted, codes


def test_strict_budget_is_never_overspent_with_demand_everywhere_and_a_node_down(cluster) -> None:
    nodes = start_three(cluster)
    agent = TestAgent()
    # 10x the capacity, on every node; one node is down for the first half
    nodes[2].kill()
    for node in nodes[:2]:
        accepted, codes = spend(node, agent, 150)
        assert set(codes) <= {"no_rights"}, codes
    first_half = union_runs(nodes, agent.public_key)
    # the two live nodes spent at most their own shares plus what they gave each other: never the
    # down node's share (33 of 100 runs)
    assert first_half <= CAPACITY - 33
    nodes[2] = cluster(2, nodes[:2])
    for node in nodes:
        spend(node, agent, 150)
    time.sleep(1.0)  # let the last transfers and events replicate
    for node in nodes:
        spend(node, agent, 20)
    total = union_runs(nodes, agent.public_key)
    assert total <= CAPACITY, f"strict overspend: {total} > {CAPACITY}"
    assert total >= CAPACITY * 95 // 100, f"only {total} of {CAPACITY} used"
    # every node's own rights account never went past its rights
    for node in nodes:
        doc = get(node.url, "/v1/escrow").json()
        for k in doc["keys"]:
            assert k["consumed"] <= k["rights"]


def test_rights_flow_to_the_one_busy_node_and_99_percent_is_used_before_the_first_429(cluster) -> None:
    """All demand on one node, an agent that never retries: the node holds an event short of rights
    while it asks its peers (strict_wait_ms), so the agent's first 429 comes only at the end."""
    nodes = start_three(cluster, ATS_STRICT_WAIT_MS="2000")
    agent = TestAgent()
    busy = nodes[0]
    accepted, refused = 0, None
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        reply = post_cbor(busy.url, "/v1/events", agent.envelope("act", RUN))
        if reply.status != 201:
            refused = reply
            break
        accepted += 1
    assert refused is not None and refused.status == 429, refused
    if accepted < CAPACITY:  # rights left somewhere in the cluster: ask again soon
        assert refused.code == "no_rights" and refused.headers["x-should-retry"] == "true", refused
        assert int(refused.headers["retry-after"]) >= 1
    else:  # the cluster spent it all: refused until the day ends, not "retry in 1 s"
        assert refused.code == "budget_exceeded" and refused.headers["x-should-retry"] == "false", refused
        assert int(refused.headers["retry-after"]) > 1
    assert accepted >= CAPACITY * 99 // 100, f"first 429 after {accepted} of {CAPACITY}"
    time.sleep(0.5)
    assert union_runs(nodes, agent.public_key) == accepted <= CAPACITY
    # today's window: near the day's end the node also holds the next day's, staged ahead (docs/strict.md)
    rights = min((k for k in get(busy.url, "/v1/escrow").json()["keys"] if k["metric"] == "act.runs"),
                 key=lambda k: k["start"])
    assert rights["received"] >= CAPACITY - 34 and rights["consumed"] == accepted
    # every node's counters, the strict rights accounts (@own, @given, @received) included, are what
    # replaying its logs gives (ats verify-db, with the nodes' settings)
    for node in nodes:
        node.stop()
        out = subprocess.run([sys.executable, "-m", "node", "verify-db", "--json", node.data_dir], capture_output=True,
                             text=True, timeout=120, env={**os.environ, **strict_env()})
        report = json.loads(out.stdout)
        assert out.returncode == 0 and report["ok"], report["findings"]
        assert report["counters"] > 0
    conn = sqlite3.connect(os.path.join(busy.data_dir, "ledger.sqlite"))
    metrics = {m for (m,) in conn.execute("SELECT DISTINCT metric FROM usage_counters")}
    conn.close()
    assert {"act.runs@own", "act.runs@received"} <= metrics


def signed_ask(node: NodeProcess, seed: bytes, doc: dict) -> object:
    """POST /v1/peer/escrow/ask signed as the node with this seed (a peer request)."""
    body = json.dumps(doc).encode()
    now = int(time.time() * 1000)
    headers = peer_headers("POST", "/v1/peer/escrow/ask", body, now, public_key_from_seed(seed), seed, os.urandom(16))
    return request(node.url, "POST", "/v1/peer/escrow/ask", body, "application/json", headers=headers)


def test_bad_asks_and_transfers_are_refused_and_write_nothing(cluster) -> None:
    nodes = start_three(cluster)
    a = nodes[0]
    agent = TestAgent()
    day = int(time.time() * 1000) // 86_400_000 * 86_400_000
    ask = {"scope": "agent", "scope_id": agent.public_key.hex(), "metric": "act.runs", "window": "day",
           "start": day, "amount": 5}
    for doc, seed, status, code in (
        (ask, bytes([0x77]) * 32, 403, "not_member"),  # an admitted node outside the member set
        ({**ask, "amount": -5}, SEEDS[1], 422, "invalid_body"),  # a negative amount
        ({**ask, "amount": 0}, SEEDS[1], 422, "invalid_body"),
        ({**ask, "start": day + 1}, SEEDS[1], 422, "invalid_body"),  # not a window's start
        ({**ask, "metric": "act.cost"}, SEEDS[1], 422, "not_strict"),  # not a strict budget
        ({**ask, "extra": 1}, SEEDS[1], 422, "invalid_body"),
    ):
        reply = signed_ask(a, seed, doc)
        assert (reply.status, reply.code) == (status, code), (doc, reply.body)
    reply = request(a.url, "POST", "/v1/peer/escrow/ask", b"not json", "application/json")
    assert reply.status == 401  # authentication comes before parsing
    # a transfer record submitted by anyone but the node itself
    outsider = TestAgent()
    body = {"scope": "agent", "scope_id": outsider.public_key.hex(), "metric": "act.runs", "window": "day",
            "start": 0, "to": bytes.fromhex(KEYS[1]), "amount": 5, "seq": 0}
    reply = post_cbor(a.url, "/v1/events", outsider.envelope("escrow.transfer", body))
    assert reply.status == 403 and reply.code == "not_authority"
    # an unsigned ask
    reply = request(a.url, "POST", "/v1/peer/escrow/ask", b"{}", "application/json")
    assert reply.status == 401 and reply.code == "bad_signature"
    sizes = [get(n.url, "/v1/log/checkpoint").body for n in nodes]
    assert all(b"\n0\n" in s for s in sizes)  # nothing was logged anywhere
    # a member that asks gets what a node with no demand holds: a transfer, logged by the giver
    reply = signed_ask(a, SEEDS[1], ask)
    assert reply.status == 200 and reply.json()["given"] == 5, reply.body
    # the transfer replayed: to its giver it is a duplicate (debited once), to anyone else not theirs to log
    transfer = base64.b64decode(get(a.url, f"/v1/events/{reply.json()['id']}").json()["envelope"])
    again = post_cbor(a.url, "/v1/events", transfer)
    assert again.status == 200 and again.json()["status"] == "duplicate"
    elsewhere = post_cbor(nodes[1].url, "/v1/events", transfer)
    # refused, or (once b merged a's log, which push makes quick) the receipt of a's copy: never b's own
    assert elsewhere.code == "not_authority" or (
        elsewhere.status == 200 and elsewhere.json()["status"] == "duplicate" and elsewhere.json()["origin"] == a.origin)
    assert get(a.url, "/v1/escrow").json()["keys"][0]["given"] == 5
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # b merges a's log: credited once
        keys = get(nodes[1].url, "/v1/escrow").json()["keys"]
        if keys and keys[0]["received"]:
            break
        time.sleep(0.1)
    assert keys[0]["received"] == 5
    # asked again and again, a holder never gives more than it holds (33 or 34 of 100 runs)
    share = escrow.share(CAPACITY, [bytes.fromhex(k) for k in KEYS], bytes.fromhex(KEYS[0]))
    given = sum(signed_ask(a, SEEDS[1], {**ask, "amount": 20}).json()["given"] for _ in range(4))
    assert given == share - 5
    assert signed_ask(a, SEEDS[1], ask).json() == {"given": 0, "id": None}
    rights = get(a.url, "/v1/escrow").json()["keys"][0]
    assert (rights["share"], rights["given"], rights["rights"]) == (share, share, 0)
    assert post_cbor(a.url, "/v1/events", agent.envelope("act", RUN)).code == "no_rights"


def test_optimistic_overspend_after_merge_is_next_windows_debt_and_a_trust_penalty(tmp_path) -> None:
    # two unconnected nodes (a partition), each admits an agent's whole events_per_minute (60) of one minute
    env = {"ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "200"}
    a = NodeProcess(str(tmp_path / "a"), host=HOSTS[0], env=env)
    b = NodeProcess(str(tmp_path / "b"), host=HOSTS[1], env=env)
    try:
        a.start()
        b.start()
        now = int(time.time() * 1000)
        if now % 60_000 > 45_000:
            time.sleep((60_000 - now % 60_000) / 1000 + 0.1)  # a fresh minute: the test fits in it
            now = int(time.time() * 1000)
        previous = now - now % 60_000 - 30_000  # inside the previous minute
        agent = TestAgent()
        for node in (a, b):
            for _ in range(60):
                reply = post_cbor(node.url, "/v1/events", agent.envelope("act", {"op": "x", "cost": 1}, ts=previous))
                assert reply.status == 201, reply.body
        assert post_cbor(a.url, "/v1/events", agent.envelope("act", {"op": "x", "cost": 1}, ts=previous)).code == "budget_exceeded"
        # the partition heals: b peers with a, and both merge the union (120 events in a 60 minute)
        b.kill()
        b = NodeProcess(b.data_dir, host=HOSTS[1], port=b.port, env={**env, "ATS_PEERS": a.url}).start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            digests = {get(n.url, "/v1/cluster/digest").json()["digest"] for n in (a, b)}
            if len(digests) == 1 and len(get(a.url, "/v1/cluster/digest").json()["origins"]) == 2:
                break
            time.sleep(0.2)
        # the 60 events of overspend are this minute's debt: the allowance of 60 is used up
        for node in (a, b):
            reply = post_cbor(node.url, "/v1/events", agent.envelope("act", {"op": "x", "cost": 1}))
            assert reply.status == 429 and reply.code == "budget_exceeded", reply.body
        # and each node that settled it rated the agent down once, in its own log
        conn = sqlite3.connect(os.path.join(a.data_dir, "ledger.sqlite"))
        try:
            rows = conn.execute("SELECT envelope FROM entries WHERE kind = 'trt'").fetchall()
        finally:
            conn.close()
        penalties = [parse_envelope(r[0]).event for r in rows]
        mine = [e for e in penalties if e.signer.hex() == a.origin and e.body.subject == agent.public_key]
        assert len(mine) == 1 and mine[0].body.value < 0
    finally:
        a.kill()
        b.kill()
