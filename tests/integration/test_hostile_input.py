"""Hostile input against a real node (issue 10, classes 1-3): each once froze a node, wedged its
writer or answered 500. Each must now get a 4xx (or a 503 for a real storage error) with a stable
code at once, store nothing it should not, and leave the node serving."""

import gzip
import json
import os
import sqlite3
import time
import zlib

import pytest

from ledger import encoding
from ledger.constants import AMOUNT_MAX, TIME_MS_MAX
from ledger.events import make_envelope_bytes
from ledger.signing import sign
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor, post_json, request


def shared_ref_bomb(levels: int) -> bytes:
    """[28([0, 0]), 28([29(0), 29(0)]), 28([29(1), 29(1)]), ...]: 2^levels leaves in ~9 bytes a level."""
    def ref(i: int) -> bytes:
        return b"\xd8\x1d" + (bytes([i]) if i < 24 else bytes([0x18, i]))

    body = bytes([0x98, levels + 1]) + b"\xd8\x1c\x82\x00\x00"
    for i in range(1, levels + 1):
        body += b"\xd8\x1c\x82" + ref(i - 1) + ref(i - 1)
    return body


CYCLE = b"\xd8\x1c\x81\xd8\x1d\x00"  # 28([29(0)]): an array holding itself


def raw_event(agent: TestAgent, body: dict, kind: str = "act", ts: int | None = None) -> bytes:
    """An envelope built without the schema check, so it can carry amounts past the bounds."""
    raw = encoding.encode({"v": 1, "kind": kind, "signer": agent.public_key,
                           "ts": int(time.time() * 1000) if ts is None else ts, "nonce": os.urandom(16), "body": body})
    return make_envelope_bytes(raw, sign(raw, agent.seed))


def healthy(node) -> bool:
    reply = get(node.url, "/healthz")
    return reply.status == 200 and reply.json()["status"] == "ok"


def stored(node) -> int:
    conn = sqlite3.connect(os.path.join(node.data_dir, "ledger.sqlite"))
    try:
        return conn.execute("SELECT count(*) FROM entries").fetchone()[0]
    finally:
        conn.close()


# -- class 1: CBOR bounded in what it expands to ----------------------------------------------


@pytest.mark.parametrize("path", ["/v1/events", "/v1/events/batch", "/v1/quota/check"])
def test_shared_reference_bomb_and_cycle_are_refused_at_once(node, path):
    bomb = shared_ref_bomb(20)
    assert len(bomb) <= 200  # 2^20 leaves in under 200 bytes
    for body in (bomb, CYCLE):
        if path.endswith("batch"):
            body = b"\x81" + body
        started = time.monotonic()
        reply = post_cbor(node.url, path, body)
        assert time.monotonic() - started < 1.0
        assert reply.status == 400 and reply.code == "cbor_tag", reply.body[:200]
    assert healthy(node) and stored(node) == 0


def test_nesting_past_the_contracts_depth_is_refused_inside_a_signed_event(node):
    agent = TestAgent()
    deep: list = [0]
    for _ in range(10):
        deep = [deep]
    reply = post_cbor(node.url, "/v1/events", raw_event(agent, {"op": "a", "cost": 1, "units": deep}))
    assert reply.status == 400 and reply.code == "cbor_too_deep"
    reply = post_cbor(node.url, "/v1/events/batch", b"\x81" * 100_000 + b"\x00")
    assert reply.status == 400 and reply.code == "cbor_too_deep"
    assert healthy(node) and stored(node) == 0


# -- class 2: amounts and sums bounded; the writer never wedged ---------------------------------


def test_amounts_at_and_past_2_63_are_refused_and_the_writer_keeps_serving(node):
    """Before: units = 2^63 was answered 503 and the next submission hung while /healthz said ok."""
    agent = TestAgent()
    for units in (2**63, 2**63, 2**64 - 1, 2**63 - 1, AMOUNT_MAX + 1):
        reply = request(node.url, "POST", "/v1/events", raw_event(agent, {"op": "x", "cost": 1, "units": units}),
                        "application/cbor", timeout_s=5)
        assert reply.status == 422 and reply.code == "amount_out_of_range", reply.body[:200]
    for kind, body in (("dat", {"src": bytes(32), "dst": bytes(32), "read": 2**63, "written": 0, "dur": 0}),
                       ("cpt", {"node": "n", "cpu": 0, "gpu": 0, "mem": 2**64 - 1, "jobs": 0}),
                       ("trt", {"subject": bytes(32), "type": "feedback", "value": -(2**63), "halflife": 1})):
        reply = post_cbor(node.url, "/v1/events", raw_event(agent, body, kind))
        assert reply.status == 422 and reply.code == "amount_out_of_range", (kind, reply.body[:200])
    reply = post_cbor(node.url, "/v1/events", raw_event(agent, {"op": "a", "cost": 1}, ts=TIME_MS_MAX + 1))
    assert reply.status == 422 and reply.code == "amount_out_of_range"
    # a batch refuses the element, keeps the others
    batch = b"\x82" + raw_event(agent, {"op": "x", "cost": 1, "units": 2**63}) + TestAgent().envelope()
    results = post_cbor(node.url, "/v1/events/batch", batch).json()["results"]
    assert results[0]["error"]["code"] == "amount_out_of_range" and results[1]["status"] == "accepted"
    assert post_cbor(node.url, "/v1/events", TestAgent().envelope()).status == 201
    assert healthy(node) and stored(node) == 2


def test_usage_totals_are_exact_at_the_amount_bound(node):
    """Before: two amounts just below 2^63 made GET /usage answer 500 (SQLite integer overflow)."""
    agent = TestAgent()
    n = 3
    for _ in range(n):
        body = {"op": "x", "cost": 1, "units": AMOUNT_MAX}
        assert post_cbor(node.url, "/v1/events", raw_event(agent, body)).status == 201
    trt = {"subject": bytes(32), "type": "feedback", "value": -AMOUNT_MAX, "halflife": AMOUNT_MAX}
    assert post_cbor(node.url, "/v1/events", raw_event(agent, trt, "trt")).status == 201
    reply = get(node.url, f"/v1/agents/{agent.public_key.hex()}/usage")
    assert reply.status == 200, reply.body[:200]
    totals = reply.json()["totals"]
    assert totals["act"] == {"count": n, "cost": n, "units": n * AMOUNT_MAX}
    assert totals["trt"] == {"count": 1, "value": -AMOUNT_MAX}
    assert get(node.url, f"/v1/agents/{agent.public_key.hex()}/balance").status == 200
    assert get(node.url, f"/v1/reports/agent/{agent.public_key.hex()}").status == 200


def test_a_storage_error_fails_one_batch_and_the_writer_goes_on(node):
    """Another process holds SQLite's write lock past the node's busy timeout: that batch gets
    503 storage_error with nothing written; once the lock is gone the next one is accepted."""
    agent = TestAgent()
    conn = sqlite3.connect(os.path.join(node.data_dir, "ledger.sqlite"), isolation_level=None, timeout=30)
    try:
        conn.execute("BEGIN IMMEDIATE")
        reply = request(node.url, "POST", "/v1/events", agent.envelope(), "application/cbor", timeout_s=30)
        assert reply.status == 503 and reply.code == "storage_error", reply.body[:300]
    finally:
        conn.execute("ROLLBACK")
        conn.close()
    assert stored(node) == 0
    for _ in range(3):
        assert request(node.url, "POST", "/v1/events", agent.envelope(), "application/cbor", timeout_s=10).status == 201
    assert healthy(node) and stored(node) == 3


# -- class 3: odd but harmless input gets a 4xx with a code ----------------------------------


AGENT_HEX = "ab" * 32
DEEP_JSON = b"[" * 8000 + b"]" * 8000  # deeper than the parser recurses, within a single event's 16 KiB


def odd_requests():
    yield "bad_parameter", ("GET", "/v1/log/entries?start=0&end=%C2%B2", None, None)  # ²
    yield "bad_parameter", ("GET", "/v1/log/entries?start=%D9%A3&end=5", None, None)  # Arabic-Indic 3
    yield "bad_parameter", ("GET", f"/v1/agents/{AGENT_HEX}/usage?since=%EF%BC%91", None, None)  # fullwidth 1
    yield "bad_parameter", ("GET", "/v1/log/proof/consistency?from=1&to=+2", None, None)
    yield "bad_parameter", ("GET", f"/v1/reports/agent/{AGENT_HEX}?at=9223372036854775807", None, None)
    yield "bad_parameter", ("GET", f"/v1/reports/agent/{AGENT_HEX}?at=99999999999999999999999", None, None)
    for path in ("/v1/events", "/v1/events/batch", "/v1/quota/check"):
        yield "bad_content_type", ("POST", path, b'{"events": []}', "application/json; charset=utf-16")
        yield "bad_content_type", ("POST", path, b'{"events": []}', "application/json; charset=no-such-charset")
        yield "malformed_json", ("POST", path, b'{"agent": "\xff\xfe"}', "application/json")
        yield "malformed_json", ("POST", path, DEEP_JSON, "application/json")
        yield "bad_content_encoding", ("POST", path, b"garbage", "application/json", {"Content-Encoding": "gzip"})
        yield "bad_content_encoding", ("POST", path, b"garbage", "application/json", {"Content-Encoding": "deflate"})


ODD = list(odd_requests())


@pytest.fixture(scope="module")
def odd_node(tmp_path_factory):
    from tests.integration.nodeproc import NodeProcess

    proc = NodeProcess(str(tmp_path_factory.mktemp("odd") / "node")).start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.mark.parametrize("code, req", ODD, ids=[f"{c}-{i}" for i, (c, _r) in enumerate(ODD)])
def test_odd_input_gets_a_4xx_with_a_stable_code(odd_node, code, req):
    method, path, body, ctype, *headers = req
    reply = request(odd_node.url, method, path, body, ctype, *headers)
    assert 400 <= reply.status < 500 and reply.code == code, (reply.status, reply.body[:300])
    assert healthy(odd_node)


def test_compressed_bodies_still_work(odd_node):
    agent = TestAgent()
    doc = {"agent": agent.public_key.hex(), "kind": "act", "body": {"op": "llm.call", "cost": 10}}
    for name, pack in (("gzip", gzip.compress), ("deflate", zlib.compress)):
        reply = request(odd_node.url, "POST", "/v1/quota/check", pack(json.dumps(doc).encode()), "application/json",
                        {"Content-Encoding": name})
        assert reply.status == 200 and reply.json()["allowed"] is True
    reply = post_json(odd_node.url, "/v1/quota/check", doc)
    assert reply.status == 200
