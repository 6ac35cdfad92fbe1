"""Submitting events to a real node process: receipts, duplicates, durability, checkpoints."""

import base64
import os
import signal
import sqlite3
import stat
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from ledger.checkpoint import open_checkpoint
from ledger.events import parse_envelope
from ledger.merkle import leaf_hash, verify_inclusion
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor, post_json
from tests.integration.nodeproc import NodeProcess


def checkpoint_of(node):
    reply = get(node.url, "/v1/log/checkpoint")
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    cp, _ = open_checkpoint(reply.body.decode(), bytes.fromhex(node.origin))
    return cp


def test_accepted_event_gets_receipt_and_is_readable_and_provable(node):
    agent = TestAgent()
    env = agent.envelope("act", {"op": "llm.call", "cost": 3200, "units": 1500})
    reply = post_cbor(node.url, "/v1/events", env)
    assert reply.status == 201
    receipt = reply.json()
    assert receipt["status"] == "accepted" and receipt["origin"] == node.origin and receipt["index"] == 0
    assert receipt["id"] == parse_envelope(env).event.id_hex
    cost = [b for b in receipt["budgets"] if b["metric"] == "act.cost"][0]
    assert (cost["scope"], cost["consumed"], cost["allocated"]) == ("agent", 3200, 5_000_000)

    stored = get(node.url, f"/v1/events/{receipt['id']}").json()
    assert stored["receipt"] == receipt
    assert base64.b64decode(stored["envelope"]) == env
    assert stored["event"]["body"] == {"op": "llm.call", "cost": 3200, "units": 1500}

    cp = checkpoint_of(node)
    assert cp.size == 1
    proof = get(node.url, f"/v1/log/proof/inclusion?id={receipt['id']}").json()
    assert proof["leaf_hash"] == leaf_hash(env).hex() and proof["size"] == 1
    assert verify_inclusion(0, 1, leaf_hash(env), [bytes.fromhex(h) for h in proof["proof"]], cp.root)


def test_json_and_cbor_forms_are_the_same_event(node):
    agent = TestAgent()
    env = parse_envelope(agent.envelope())
    doc = {"event": base64.b64encode(env.event.raw).decode(), "sig": base64.b64encode(env.sig).decode()}
    first = post_json(node.url, "/v1/events", doc)
    assert first.status == 201
    again = post_cbor(node.url, "/v1/events", env.raw)
    assert again.status == 200 and again.json()["status"] == "duplicate"
    assert again.json()["index"] == first.json()["index"]


def test_resubmitted_event_returns_stored_receipt_and_counts_once(node):
    agent = TestAgent()
    env = agent.envelope("dat", {"src": bytes(32), "dst": bytes(32), "read": 100, "written": 7, "dur": 3})
    first = post_cbor(node.url, "/v1/events", env)
    second = post_cbor(node.url, "/v1/events", env)
    assert (first.status, second.status) == (201, 200)
    assert second.json() == {**first.json(), "status": "duplicate"}
    usage = get(node.url, f"/v1/agents/{agent.public_key.hex()}/usage").json()
    assert usage["totals"]["dat"] == {"count": 1, "read": 100, "written": 7, "dur": 3}
    assert checkpoint_of(node).size == 1


def test_old_duplicate_gets_its_receipt_not_stale_timestamp(make_node):
    # a retry of an accepted event after the skew window has passed is still answered with its receipt
    node = make_node("skew", env={"ATS_SKEW_MS": "1500"}).start()
    agent = TestAgent()
    env = agent.envelope()
    assert post_cbor(node.url, "/v1/events", env).status == 201
    time.sleep(2.0)
    assert post_cbor(node.url, "/v1/events", env).json()["status"] == "duplicate"
    assert post_cbor(node.url, "/v1/events", agent.envelope(ts=int(time.time() * 1000) - 3000)).code == "stale_timestamp"


def test_batch_answers_each_envelope_in_order(node):
    agent = TestAgent()
    good = agent.envelope()
    stale = agent.envelope(ts=1000)
    bad_sig = bytearray(agent.envelope())
    bad_sig[-1] ^= 1
    body = b"\x84" + good + stale + bytes(bad_sig) + good
    reply = post_cbor(node.url, "/v1/events/batch", body)
    assert reply.status == 200
    doc = reply.json()
    results = doc["results"]
    assert results[0]["status"] == "accepted"
    assert results[1]["error"]["code"] == "stale_timestamp"
    assert results[2]["error"]["code"] == "bad_signature"
    assert results[3]["status"] == "duplicate" and results[3]["index"] == results[0]["index"]
    assert (doc["accepted"], doc["duplicates"], doc["errors"]) == (1, 1, 2)
    assert checkpoint_of(node).size == 1


def test_json_batch(node):
    agent = TestAgent()
    envs = [parse_envelope(agent.envelope()) for _ in range(5)]
    doc = {"events": [{"event": base64.b64encode(e.event.raw).decode(), "sig": base64.b64encode(e.sig).decode()} for e in envs]}
    reply = post_json(node.url, "/v1/events/batch", doc)
    assert [r["index"] for r in reply.json()["results"]] == [0, 1, 2, 3, 4]


def test_concurrent_submitters_share_commits_and_every_ack_survives_sigkill(node):
    agents = [TestAgent() for _ in range(8)]
    envelopes = [a.envelope("cpt", {"node": "n1", "cpu": i % 2, "gpu": 0, "mem": i, "jobs": 1}) for i in range(40) for a in agents]
    with ThreadPoolExecutor(32) as pool:
        replies = list(pool.map(lambda e: post_cbor(node.url, "/v1/events", e), envelopes))
    node.kill(signal.SIGKILL)  # right after the last reply
    acked = {r.json()["id"]: r.json()["index"] for r in replies if r.status == 201}
    assert len(acked) == len(envelopes)

    conn = sqlite3.connect(os.path.join(node.data_dir, "ledger.sqlite"))
    node_key = conn.execute("SELECT public_key FROM origins ORDER BY id LIMIT 1").fetchone()[0]
    # the agents' events; the node's own records (e.g. an anomaly flag under this burst) are not acked to anyone
    rows = dict((eid.hex(), idx) for eid, idx in conn.execute("SELECT event_id, idx FROM entries WHERE signer != ?", (node_key,)))
    commits = conn.execute("SELECT count(*) FROM checkpoints").fetchone()[0]
    stored = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    conn.close()
    assert rows == acked  # every acknowledged event is on disk, at the index its receipt named
    assert commits - 1 < len(envelopes)  # group commit: fewer checkpoints (minus the size-0 one) than events

    node.start()
    assert checkpoint_of(node).size == stored
    out = subprocess.run([sys.executable, "-m", "node", "verify-db", node.data_dir], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


def test_metrics_report_ingest(node):
    agent = TestAgent()
    post_cbor(node.url, "/v1/events", agent.envelope())
    post_cbor(node.url, "/v1/events", b"\x00")
    text = get(node.url, "/metrics").body.decode()
    assert 'ats_events_total{outcome="accepted"} 1' in text
    assert "ats_log_size 1" in text
    assert "ats_commit_batch_events_count 1" in text
    assert 'ats_http_requests_total{route="/v1/events",status="400"} 1' in text


def test_node_key_is_created_private_and_reused(tmp_path):
    data = str(tmp_path / "n")
    with NodeProcess(data) as node:
        first = node.origin
    mode = stat.S_IMODE(os.stat(os.path.join(data, "node.key")).st_mode)
    assert mode == 0o600
    with NodeProcess(data) as node:
        assert node.origin == first


def test_node_warns_about_a_key_file_readable_by_others_and_refuses_a_world_writable_one(tmp_path):
    data = str(tmp_path / "n")
    with NodeProcess(data) as first:
        origin = first.origin
    os.chmod(os.path.join(data, "node.key"), 0o644)  # e.g. a secret mounted read-only: the operator's choice
    with NodeProcess(data) as node:
        assert node.origin == origin
    assert "readable by others" in node.stderr() and "chmod 600" in node.stderr()
    os.chmod(os.path.join(data, "node.key"), 0o666)
    out = subprocess.run([sys.executable, "-m", "node", "node", "--data-dir", data, "--port", "0"],
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 2 and "anyone may replace it" in out.stderr


def test_tampered_log_makes_node_read_only(tmp_path):
    data = str(tmp_path / "n")
    agent = TestAgent()
    with NodeProcess(data) as node:
        for _ in range(3):
            assert post_cbor(node.url, "/v1/events", agent.envelope()).status == 201
    conn = sqlite3.connect(os.path.join(data, "ledger.sqlite"))
    # the startup check reads the frontier's stored hashes (O(log n)); corrupt them all
    conn.execute("UPDATE tree_hashes SET hash = zeroblob(32)")
    conn.commit()
    conn.close()
    with NodeProcess(data) as node:
        health = get(node.url, "/healthz")
        assert health.status == 503 and health.code == "read_only"
        reply = post_cbor(node.url, "/v1/events", agent.envelope())
        assert reply.status == 503 and reply.code == "read_only"
        assert get(node.url, "/v1/node").json()["read_only"] is True
    out = subprocess.run([sys.executable, "-m", "node", "verify-db", data], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "FAIL" in out.stderr


def test_sigterm_shuts_down_cleanly(node):
    assert node.stop() == 0


def test_verify_db_finds_a_changed_entry(tmp_path):
    data = str(tmp_path / "n")
    agent = TestAgent()
    with NodeProcess(data) as node:
        for _ in range(5):
            assert post_cbor(node.url, "/v1/events", agent.envelope()).status == 201
    ok = subprocess.run([sys.executable, "-m", "node", "verify-db", data], capture_output=True, text=True, timeout=60)
    assert ok.returncode == 0 and "verified 5 entries" in ok.stdout
    conn = sqlite3.connect(os.path.join(data, "ledger.sqlite"))
    # swap in another validly signed envelope: signatures pass, the tree root does not
    conn.execute("UPDATE entries SET envelope = ? WHERE idx = 2", (agent.envelope(),))
    conn.commit()
    conn.close()
    out = subprocess.run([sys.executable, "-m", "node", "verify-db", data], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and "FAIL" in out.stderr
