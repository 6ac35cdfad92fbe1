"""Fuzz tier over HTTP for the JSON endpoints beyond events: the LLM gateway (OpenAI and Anthropic
dialects), the task meter and the peer messages, on one real node with the gateway on in front of
the test's own upstream (tests/integration/fake_openai.py).

Each example is one real request: a valid body with one field replaced by a hostile JSON value
(tests/fuzzkit.py: numbers at every edge, wrong types, nesting), a hostile whole body, or a valid
body with a bearer token whose parts are hostile. Every answer is a 2xx or a 4xx carrying an error
code (in the dialect's own shape), never a 5xx, a hang or a dropped connection, and the node is
healthy afterwards. Found this way: a token part nested past the JSON parser (a 500), and a
non-boolean `stream` (a call charged as a broken answer).
"""

from __future__ import annotations

import json
import os
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger.credentials import mint
from tests.fuzzkit import JSON_POST_BASES, JSON_POST_EXTRA, json_body, json_value, token_part, with_token_part
from tests.integration.fake_openai import FakeOpenAI
from tests.integration.http import get, request
from tests.integration.nodeproc import NodeProcess

pytestmark = pytest.mark.integration

HTTP = settings(max_examples=100, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SEED = os.urandom(32)
BASES, EXTRA = JSON_POST_BASES, JSON_POST_EXTRA
PATHS = sorted(BASES)


@pytest.fixture(scope="module")
def gateway_node(tmp_path_factory):
    with FakeOpenAI(slow_ms=1) as upstream:
        env = {"ATS_LLM_GATEWAY": "true", "ATS_LLM_UPSTREAM": upstream.url, "ATS_LLM_UPSTREAM_KEY": "sk-node",
               "ATS_LLM_ANTHROPIC_UPSTREAM": upstream.url, "ATS_LLM_ANTHROPIC_UPSTREAM_KEY": "sk-anthropic-node",
               "ATS_LLM_MODELS": "test-model,test-embed,claude-test", "ATS_DEFAULT_PLAN": "platformium",
               "ATS_LLM_TIMEOUT_MS": "5000"}
        with NodeProcess(str(tmp_path_factory.mktemp("fuzzgw") / "node"), env=env) as node:
            yield node


def token() -> str:
    return mint(SEED, now_s=int(time.time()), ttl_s=3600)


def check_answer(node: NodeProcess, path: str, body: bytes, bearer: str) -> None:
    reply = request(node.url, "POST", path, body, "application/json", headers={"Authorization": f"Bearer {bearer}"},
                    timeout_s=20)
    assert reply.status < 500, (path, body[:200], reply.status, reply.body[:300])
    if reply.status >= 400:
        assert reply.code, (path, body[:200], reply.status, reply.body[:300])


@pytest.mark.parametrize("path", PATHS)
@settings(HTTP, max_examples=60)
@given(data=st.data())
def test_one_hostile_field_gets_2xx_or_4xx_with_a_code(gateway_node, path, data):
    field = data.draw(st.sampled_from(sorted(set(BASES[path]) | set(EXTRA))), label="field")
    doc = {**BASES[path], field: data.draw(json_value, label="value")}
    check_answer(gateway_node, path, json.dumps(doc).encode(), token())


@HTTP
@given(path=st.sampled_from(PATHS), body=json_body())
def test_hostile_bodies_get_2xx_or_4xx_with_a_code(gateway_node, path, body):
    check_answer(gateway_node, path, body, token())


@HTTP
@given(path=st.sampled_from([p for p in PATHS if not p.startswith("/v1/peer/")]), hostile=token_part)
def test_hostile_token_parts_get_401_with_a_code(gateway_node, path, hostile):
    part, value = hostile
    reply = request(gateway_node.url, "POST", path, json.dumps(BASES[path]).encode(), "application/json",
                    headers={"Authorization": "Bearer " + with_token_part(token(), part, value)}, timeout_s=20)
    assert reply.status == 401 and reply.code, (part, value[:100], reply.status, reply.body[:300])


def test_the_node_is_healthy_and_meters_after_the_fuzzing(gateway_node):
    reply = get(gateway_node.url, "/healthz")
    assert reply.status == 200 and reply.json()["status"] == "ok"
    body = json.dumps(BASES["/llm/v1/chat/completions"]).encode()
    reply = request(gateway_node.url, "POST", "/llm/v1/chat/completions", body, "application/json",
                    headers={"Authorization": f"Bearer {token()}"})
    assert reply.status == 200 and reply.json()["usage"]["total_tokens"] > 0
