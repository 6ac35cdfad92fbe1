"""Fuzz tier over HTTP: hostile CBOR and JSON bodies (tests/fuzzkit.py) against one real node.

Every answer is a 2xx or a 4xx with a JSON error code, never a 5xx or a hang, and the node answers
/healthz ok afterwards. Fewer examples than the in-process tier (tests/unit/test_cbor_bounds.py):
each is a real request.
"""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import encoding
from tests.agentkit import TestAgent
from tests.fuzzkit import hostile_item, json_body, json_value, signed_envelope
from tests.integration.http import get, request
from tests.integration.nodeproc import NodeProcess

PATHS = ["/v1/events", "/v1/events/batch", "/v1/quota/check"]
HTTP = settings(max_examples=150, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
AGENT = TestAgent()


@pytest.fixture(scope="module")
def fuzz_node(tmp_path_factory):
    proc = NodeProcess(str(tmp_path_factory.mktemp("fuzz") / "node")).start()
    try:
        yield proc
    finally:
        proc.kill()


def check_answer(node, method: str, path: str, body: bytes, ctype: str) -> None:
    reply = request(node.url, method, path, body, ctype, timeout_s=10)
    assert reply.status < 500, (path, body[:200], reply.status, reply.body[:300])
    if reply.status >= 400:
        assert reply.code, (path, body[:200], reply.status, reply.body[:300])


@HTTP
@given(path=st.sampled_from(PATHS), data=hostile_item(), batch=st.booleans())
def test_hostile_cbor_bodies_get_2xx_or_4xx_with_a_code(fuzz_node, path, data, batch):
    body = encoding._head(4, 1) + data if batch else data
    check_answer(fuzz_node, "POST", path, body, "application/cbor")


@HTTP
@given(path=st.sampled_from(PATHS), body=json_body())
def test_hostile_json_bodies_get_2xx_or_4xx_with_a_code(fuzz_node, path, body):
    check_answer(fuzz_node, "POST", path, body, "application/json")


@HTTP
@given(path=st.sampled_from(PATHS), envelopes=st.lists(signed_envelope(AGENT.public_key, AGENT.seed), min_size=1, max_size=3))
def test_signed_events_with_edge_amounts_get_2xx_or_4xx_with_a_code(fuzz_node, path, envelopes):
    body = envelopes[0] if not path.endswith("batch") else encoding._head(4, len(envelopes)) + b"".join(envelopes)
    check_answer(fuzz_node, "POST", path, body, "application/cbor")


@HTTP
@given(value=json_value)
def test_estimates_with_any_body_get_2xx_or_4xx_with_a_code(fuzz_node, value):
    import json

    doc = {"agent": AGENT.public_key.hex(), "kind": "run.reserve", "body": value}
    check_answer(fuzz_node, "POST", "/v1/quota/check", json.dumps(doc).encode(), "application/json")


def test_the_node_is_healthy_and_usable_after_the_fuzzing(fuzz_node):
    reply = get(fuzz_node.url, "/healthz")
    assert reply.status == 200 and reply.json()["status"] == "ok"
    assert request(fuzz_node.url, "POST", "/v1/events", TestAgent().envelope(), "application/cbor").status == 201
    assert get(fuzz_node.url, f"/v1/agents/{AGENT.public_key.hex()}/usage").status == 200
    assert get(fuzz_node.url, f"/v1/reports/agent/{AGENT.public_key.hex()}").status in (200, 404)
