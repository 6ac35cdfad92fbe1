"""Replication between real node processes on 127.0.0.x: convergence, witnesses, membership, faults."""

import base64
import signal
import subprocess
import sys
import time

import pytest

from ledger.checkpoint import open_checkpoint
from ledger.merkle import leaf_hash, verify_inclusion
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor
from tests.integration.nodeproc import NodeProcess

OPEN = {"ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "200", "ATS_BUDGETS": "false"}
CONVERGE_S = 30


def start(tmp_path, name, host, peers=(), **env):
    proc = NodeProcess(str(tmp_path / name), host=host, env={**OPEN, "ATS_PEERS": ",".join(p.url for p in peers), **env})
    return proc.start()


def digest(node):
    return get(node.url, "/v1/cluster/digest").json()


def wait_converged(nodes, expect_origins, timeout_s=CONVERGE_S):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        docs = [digest(n) for n in nodes]
        if len({d["digest"] for d in docs}) == 1 and len(docs[0]["origins"]) == expect_origins:
            return docs[0]
        time.sleep(0.2)
    raise AssertionError(f"not converged: {[ (d['digest'][:12], [(o['origin'][:8], o['size']) for o in d['origins']]) for d in docs]}")


@pytest.fixture
def nodes():
    made = []
    yield made
    for n in made:
        n.kill()


def test_three_nodes_converge_on_the_union_of_their_logs(tmp_path, nodes):
    a = start(tmp_path, "a", "127.0.0.2")
    nodes.append(a)
    b = start(tmp_path, "b", "127.0.0.3", peers=[a])
    nodes.append(b)
    c = start(tmp_path, "c", "127.0.0.4", peers=[b])  # learns a through b (peer exchange)
    nodes.append(c)
    agent = TestAgent()
    ids = {}
    for node in (a, b, c):
        for _ in range(5):
            reply = post_cbor(node.url, "/v1/events", agent.envelope("act", {"op": "llm.call", "cost": 100}))
            assert reply.status == 201
            ids[reply.json()["id"]] = node
    # the same event submitted to two nodes is counted once everywhere
    shared = agent.envelope("act", {"op": "llm.call", "cost": 7})
    assert post_cbor(a.url, "/v1/events", shared).status == 201
    assert post_cbor(c.url, "/v1/events", shared).status == 201
    done = wait_converged([a, b, c], 3)
    assert sorted(o["size"] for o in done["origins"]) == [5, 6, 6]
    for node in (a, b, c):
        usage = get(node.url, f"/v1/agents/{agent.public_key.hex()}/usage").json()
        assert usage["totals"]["act"] == {"count": 16, "cost": 1507, "units": 0}
    # b proves one of a's events from its own copy, against a's signed checkpoint
    some_id = next(i for i, n in ids.items() if n is a)
    note = get(b.url, f"/v1/log/checkpoint?origin={a.origin}").body.decode()
    cp, _ = open_checkpoint(note, bytes.fromhex(a.origin))
    proof = get(b.url, f"/v1/log/proof/inclusion?id={some_id}&origin={a.origin}").json()
    envelope = base64.b64decode(get(b.url, f"/v1/events/{some_id}").json()["envelope"])
    assert verify_inclusion(proof["index"], cp.size, leaf_hash(envelope), [bytes.fromhex(h) for h in proof["proof"]], cp.root)
    peers = get(a.url, "/v1/peers").json()["peers"]
    assert {p["node"] for p in peers if p["node"]} >= {b.origin}
    assert all(p["state"] == "ok" for p in peers if p["node"])


def test_witness_cosignatures_anchor_checkpoints(tmp_path, nodes):
    sink = tmp_path / "anchors.txt"
    a = start(tmp_path, "a", "127.0.0.2", ATS_ANCHOR_SINK=str(sink))
    nodes.append(a)
    reply = get(a.url, "/v1/log/checkpoint/anchored")
    assert reply.status == 404 and reply.code == "not_anchored"
    b = start(tmp_path, "b", "127.0.0.3", peers=[a])
    nodes.append(b)
    assert post_cbor(a.url, "/v1/events", TestAgent().envelope()).status == 201
    deadline = time.monotonic() + CONVERGE_S
    while time.monotonic() < deadline and get(a.url, "/v1/log/checkpoint/anchored").status != 200:
        time.sleep(0.2)
    anchored = get(a.url, "/v1/log/checkpoint/anchored").body.decode()
    cp, others = open_checkpoint(anchored, bytes.fromhex(a.origin))
    assert cp.size >= 1 and any(s.name == f"ats-ledger/{b.origin}" for s in others)
    from ledger.checkpoint import verify_cosignature

    cosig = next(s for s in others if s.name == f"ats-ledger/{b.origin}")
    assert verify_cosignature(cp, cosig, cosig.name, bytes.fromhex(b.origin)) > 0
    assert sink.read_text().startswith(f"ats-ledger/{a.origin}\n")


def test_closed_membership_merges_only_admitted_nodes(tmp_path, nodes):
    authority = TestAgent(bytes([5]) * 32)
    closed = {"ATS_OPEN_MEMBERSHIP": "false", "ATS_AUTHORITIES": authority.public_key.hex()}
    a = start(tmp_path, "a", "127.0.0.2", **closed)
    nodes.append(a)
    b = start(tmp_path, "b", "127.0.0.3", peers=[a], **closed)
    nodes.append(b)
    assert post_cbor(a.url, "/v1/events", TestAgent().envelope()).status == 201
    time.sleep(1.5)
    assert a.origin not in {o["origin"] for o in digest(b)["origins"]}  # a is not admitted on b
    assert "not_authority" in (get(b.url, "/v1/peers").json()["peers"][0]["last_error"] or "")
    # the authority admits each node on the other
    assert post_cbor(b.url, "/v1/events", authority.envelope("node.admit", {"node": bytes.fromhex(a.origin), "name": "a"})).status == 201
    assert post_cbor(a.url, "/v1/events", authority.envelope("node.admit", {"node": bytes.fromhex(b.origin), "name": "b"})).status == 201
    wait_converged([a, b], 2)


def test_new_node_catches_up_through_sigkill(tmp_path, nodes):
    # the test is about catch-up: no anomaly flags (node-signed trust penalties) among the 3000 entries
    a = start(tmp_path, "a", "127.0.0.2", ATS_CHECKPOINT_EVENTS_MAX="1000", ATS_BATCH_EVENTS_MAX="500",
              ATS_ANOMALY_DETECTION="false")
    nodes.append(a)
    agents = [TestAgent() for _ in range(20)]
    for i in range(0, 3000, 500):
        batch = [agents[j % 20].envelope("act", {"op": "x", "cost": 1}) for j in range(i, i + 500)]
        body = bytes([0x99, 0x01, 0xF4]) + b"".join(batch)
        assert post_cbor(a.url, "/v1/events/batch", body).json()["accepted"] == 500
    b = start(tmp_path, "b", "127.0.0.3", peers=[a], ATS_REPLICATION_ENTRIES_MAX="200")
    nodes.append(b)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        origins = {o["origin"]: o["size"] for o in digest(b)["origins"]}
        if origins.get(a.origin, 0) > 0:
            break
        time.sleep(0.05)
    b.kill(signal.SIGKILL)  # mid catch-up
    b.start()
    wait_converged([a, b], 1)  # b's own log is empty
    out = subprocess.run([sys.executable, "-m", "node", "verify-db", b.data_dir], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "verified 3000 entries" in out.stdout
    # the operator's view: per origin, held against the most seen at a peer, with progress bars
    doc = get(b.url, "/v1/peers").json()
    assert {"origin": a.origin, "held": 3000, "seen": 3000} in doc["origins"]
    watch = subprocess.run([sys.executable, "-m", "node", "peers", "--url", b.url, "--watch", "--seconds", "20"],
                           capture_output=True, text=True, timeout=60)
    assert watch.returncode == 0, watch.stderr
    assert f"origin {a.origin[:12]}" in watch.stderr and "3000/3000" in watch.stderr
    assert a.url in watch.stdout


def test_nodes_on_loopback_find_each_other_by_mdns_and_replicate(tmp_path, nodes):
    # discovery = loopback (the default): mDNS on 127.0.0.1 only, no static peers
    a = start(tmp_path, "a", "127.0.0.2", ATS_DISCOVERY="loopback")
    nodes.append(a)
    b = start(tmp_path, "b", "127.0.0.3", ATS_DISCOVERY="loopback")
    nodes.append(b)
    assert post_cbor(a.url, "/v1/events", TestAgent().envelope()).status == 201
    done = wait_converged([a, b], 1)
    assert done["origins"][0]["origin"] == a.origin
    sources = {p["source"] for p in get(b.url, "/v1/peers").json()["peers"]}
    assert "discovered" in sources
