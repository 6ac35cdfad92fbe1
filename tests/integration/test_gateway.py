"""The LLM gateway (PROTOCOL.md §6, docs/gateway.md), driven by the official `openai` client.

A real node process with the gateway on, in front of an OpenAI-compatible upstream the test
starts (tests/integration/fake_openai.py), which counts the calls it receives. After each
scenario the ledger is read back (usage and balance): every call that reached the upstream is
charged once, by a node-signed metered event naming the agent, and nothing else is.
"""

from __future__ import annotations

import base64
import concurrent.futures
import sys
import subprocess
import http.client
import json
import os
import socket
import time
import urllib.parse
import urllib.request
from typing import Any

import openai
import pytest

from ledger.credentials import mint
from ledger.signing import public_key_from_seed
from tests.integration.fake_openai import ERROR_BODY, FakeOpenAI
from tests.integration.nodeproc import NodeProcess

pytestmark = pytest.mark.integration

MODELS = "test-model,slow-model,error-model,garbage-model,hang-model,test-embed,dead-model,claude-test"
TOKENS_PER_DAY = 50_000  # the freemium plan's llm_tokens_per_day
TOKEN_PRICE = 10  # milli-T per token (llm.call.token), for a model without prices of its own


def _env(upstream: FakeOpenAI, **extra: str) -> dict[str, str]:
    return {"ATS_LLM_GATEWAY": "true", "ATS_LLM_UPSTREAM": upstream.url, "ATS_LLM_UPSTREAM_KEY": "sk-node",
            "ATS_LLM_ANTHROPIC_UPSTREAM": upstream.url, "ATS_LLM_ANTHROPIC_UPSTREAM_KEY": "sk-anthropic-node",
            "ATS_LLM_MODELS": MODELS, "ATS_LLM_ROUTES": "dead-model=http://127.0.0.1:9/v1",
            "ATS_LLM_TIMEOUT_MS": "5000", "ATS_LLM_BODY_BYTES_MAX": "65536", **extra}


@pytest.fixture(scope="module")
def upstream():
    with FakeOpenAI(slow_ms=50) as up:
        yield up


@pytest.fixture(scope="module")
def node(upstream, tmp_path_factory):
    with NodeProcess(str(tmp_path_factory.mktemp("gw") / "node"), env=_env(upstream)) as n:
        yield n


class Agent:
    def __init__(self, node: NodeProcess, **mint_args: Any):
        self.seed = os.urandom(32)
        self.hex = public_key_from_seed(self.seed).hex()
        self.node = node
        self.token = mint(self.seed, now_s=int(time.time()), ttl_s=mint_args.pop("ttl_s", 3600), **mint_args)
        self.client = openai.OpenAI(base_url=node.url + "/llm/v1", api_key=self.token, max_retries=0, timeout=30)

    def get(self, path: str) -> Any:
        with urllib.request.urlopen(self.node.url + path, timeout=10) as r:
            return json.loads(r.read())

    def events(self) -> list[dict[str, Any]]:
        return self.get(f"/v1/agents/{self.hex}/usage?kind=act")["events"]

    def budget(self, metric: str) -> dict[str, Any]:
        budgets = self.get(f"/v1/agents/{self.hex}/balance")["budgets"]
        return next(b for b in budgets if b["metric"] == metric and b["scope"] == "agent" and b["allocated"] is not None)

    def wait_events(self, n: int, timeout_s: float = 15) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            events = self.events()
            if len(events) >= n:
                return events
            time.sleep(0.05)
        raise AssertionError(f"expected {n} metered events, have {len(self.events())}")


def _chat(agent: Agent, model: str = "test-model", **kw: Any) -> Any:
    return agent.client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "hello there"}], **kw)


def _raw_post(node: NodeProcess, path: str, body: bytes, token: str | None) -> tuple[int, dict[str, Any], dict[str, str]]:
    u = urllib.parse.urlsplit(node.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})}
    conn.request("POST", path, body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data), {k.lower(): v for k, v in resp.getheaders()}


def test_chat_completion_is_charged_by_a_node_signed_event_naming_the_agent(node, upstream):
    agent = Agent(node)
    raw = _chat(agent, max_tokens=5)
    reply = raw.parse()
    tokens = reply.usage.prompt_tokens + reply.usage.completion_tokens
    assert int(raw.headers["x-ats-cost-milli"]) == tokens * TOKEN_PRICE
    assert raw.headers["x-ats-cost"] == f"{tokens * TOKEN_PRICE // 1000}.{tokens * TOKEN_PRICE % 1000:03d}"
    [event] = agent.wait_events(1)  # the charge commits after the answer left
    body = event["body"]
    assert event["signer"] == node.origin and body["agent"] == agent.hex and event["nonce"] == raw.headers["x-ats-call"]
    assert (body["model"], body["tokens_in"], body["tokens_out"]) == ("test-model", reply.usage.prompt_tokens, 5)
    assert body["units"] == tokens and body["cost"] == tokens * TOKEN_PRICE
    llm = agent.budget("act.llm_tokens")
    assert llm["consumed"] == tokens and llm["held"] == 0
    assert int(raw.headers["x-ats-remaining-milli"]) == agent.budget("act.cost")["remaining"]


def test_stream_passes_chunks_and_drops_the_usage_chunk_the_client_did_not_ask_for(node, upstream):
    agent = Agent(node)
    plain = list(agent.client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}],
                                                      max_tokens=4, stream=True))
    assert len(plain) == 4 and all(c.usage is None for c in plain)
    asked = list(agent.client.chat.completions.create(model="test-model", messages=[{"role": "user", "content": "x"}],
                                                      max_tokens=4, stream=True, stream_options={"include_usage": True}))
    assert len(asked) == 5 and asked[-1].usage.completion_tokens == 4 and asked[-1].choices == []
    events = agent.wait_events(2)
    assert [e["body"]["tokens_out"] for e in events] == [4, 4]
    assert agent.budget("act.llm_tokens")["consumed"] == sum(e["body"]["units"] for e in events)


def test_embeddings_and_models_go_through(node, upstream):
    agent = Agent(node)
    reply = agent.client.embeddings.create(model="test-embed", input=["alpha", "beta gamma"])
    assert len(reply.data) == 2
    [event] = agent.wait_events(1)
    assert event["body"]["tokens_in"] == reply.usage.prompt_tokens and event["body"]["tokens_out"] == 0
    assert [m.id for m in agent.client.models.list()] == ["test-model", "test-embed"]


def test_call_over_budget_is_refused_with_429_and_never_reaches_the_upstream(node, upstream):
    agent = Agent(node)
    _chat(agent, max_tokens=1, user=f"usage={TOKENS_PER_DAY - 1000},0")  # the day's tokens nearly spent
    agent.wait_events(1)
    before = upstream.total()
    with pytest.raises(openai.RateLimitError) as e:
        _chat(agent, max_tokens=2000)
    assert e.value.code == "budget_exceeded" and e.value.status_code == 429
    assert e.value.response.headers["x-should-retry"] == "false" and int(e.value.response.headers["retry-after"]) > 60
    assert upstream.total() == before
    assert len(agent.events()) == 1 and agent.budget("act.llm_tokens")["held"] == 0


def test_concurrent_calls_against_a_nearly_spent_budget_never_pass_it(node, upstream):
    agent = Agent(node)
    _chat(agent, max_tokens=1, user=f"usage={TOKENS_PER_DAY - 5000},0")
    agent.wait_events(1)  # this fake upstream reports far more than was reserved: let it land first
    before = upstream.total()

    def one(_i: int) -> bool:
        try:
            _chat(agent, max_tokens=1000, user="usage=100,1000")
            return True
        except openai.RateLimitError:
            return False

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        admitted = sum(pool.map(one, range(16)))
    assert 1 <= admitted <= 4  # each holds ~1,200 tokens of the 5,000 left
    events = agent.wait_events(1 + admitted)
    assert len(events) == 1 + admitted == 1 + upstream.total() - before  # one charge per call, one call per charge
    consumed = agent.budget("act.llm_tokens")["consumed"]
    assert consumed == sum(e["body"]["units"] for e in events) <= TOKENS_PER_DAY


@pytest.mark.parametrize("case, code", [
    ("none", "token_required"), ("garbage", "invalid_token"), ("expired", "token_expired"),
    ("audience", "token_audience"), ("lifetime", "token_lifetime"), ("signature", "token_signature"),
    ("future", "token_not_yet_valid"), ("nested", "invalid_token"),
])
def test_bad_credentials_get_401_with_their_code_and_reach_nothing(node, upstream, case, code):
    seed, now = os.urandom(32), int(time.time())
    token = {
        "none": None, "garbage": "not.a.jwt",
        "expired": mint(seed, now_s=now - 7200, ttl_s=3600),
        "audience": mint(seed, now_s=now, ttl_s=3600, audience="someone-else"),
        "lifetime": mint(seed, now_s=now, ttl_s=400 * 86_400),
        "signature": mint(seed, now_s=now, ttl_s=3600)[:-4] + "AAAA",
        "future": mint(seed, now_s=now + 7200, ttl_s=3600),
        # a header nested past the JSON parser's recursion limit (it was a 500)
        "nested": base64.urlsafe_b64encode(b"[" * 2500).rstrip(b"=").decode() + ".e30.AA",
    }[case]
    before = upstream.total()
    status, doc, _ = _raw_post(node, "/llm/v1/chat/completions", b'{"model": "test-model", "messages": []}', token)
    assert status == 401 and doc["error"]["code"] == code and set(doc["error"]) == {"message", "type", "param", "code"}
    assert upstream.total() == before


@pytest.mark.parametrize("body, status, code", [
    (b"[1, 2]", 400, "invalid_request"),
    (b"{not json", 400, "invalid_request"),
    (b'{"messages": []}', 400, "invalid_request"),
    (b'{"model": "test-model", "messages": [], "max_tokens": -1}', 400, "invalid_request"),
    (b'{"model": "test-model", "messages": [], "stream": 1}', 400, "invalid_request"),
    (b'{"model": "test-model", "messages": [], "stream": NaN}', 400, "invalid_request"),
    (b'{"model": "test-model", "messages": [], "stream": "yes"}', 400, "invalid_request"),
    (b'{"model": "no-such-model", "messages": []}', 404, "unknown_model"),
    (b'{"model": "test-model", "messages": [{"role": "user", "content": "' + b"x" * 70_000 + b'"}]}', 413, "prompt_too_large"),
])
def test_bad_requests_get_their_code_and_charge_nothing(node, upstream, body, status, code):
    agent = Agent(node)
    before = upstream.total()
    got, doc, _ = _raw_post(node, "/llm/v1/chat/completions", body, agent.token)
    assert (got, doc["error"]["code"]) == (status, code)
    assert upstream.total() == before and agent.events() == []


def test_upstream_error_is_passed_through_and_releases_the_reservation(node, upstream):
    agent = Agent(node)
    with pytest.raises(openai.BadRequestError) as e:
        _chat(agent, model="error-model")
    assert e.value.body == ERROR_BODY["error"]  # the upstream's own body, as it sent it
    assert agent.events() == [] and agent.budget("act.llm_tokens")["held"] == 0


def test_unreachable_upstream_is_502_and_charges_nothing(node, upstream):
    agent = Agent(node)
    with pytest.raises(openai.APIStatusError) as e:
        _chat(agent, model="dead-model")
    assert e.value.status_code == 502 and e.value.code == "upstream_unreachable"
    assert agent.events() == [] and agent.budget("act.llm_tokens")["held"] == 0


@pytest.mark.parametrize("model, status, code", [("garbage-model", 502, "upstream_bad_response"),
                                                 ("hang-model", 504, "upstream_timeout")])
def test_upstream_garbage_or_hang_is_charged_at_the_reservation(node, upstream, model, status, code):
    agent = Agent(node)
    with pytest.raises(openai.APIStatusError) as e:
        _chat(agent, model=model, max_tokens=100)
    assert (e.value.status_code, e.value.code) == (status, code)
    [event] = agent.events()
    assert event["body"]["tokens_out"] == 100 and event["body"]["cost"] == int(e.value.response.headers["x-ats-cost-milli"])
    assert agent.budget("act.llm_tokens")["held"] == 0


def test_client_that_leaves_mid_stream_is_charged_what_the_upstream_produced(node, upstream):
    agent = Agent(node)
    body = json.dumps({"model": "slow-model", "stream": True, "messages": [{"role": "user", "content": "go"}]}).encode()
    u = urllib.parse.urlsplit(node.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.request("POST", "/llm/v1/chat/completions", body=body,
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {agent.token}"})
    resp = conn.getresponse()
    assert resp.status == 200 and resp.headers["x-ats-reserved-milli"]
    resp.read1(200)  # the first events, then the client goes away
    conn.sock.close()
    conn.close()
    [event] = agent.wait_events(1)
    assert event["body"]["tokens_out"] == 40  # the whole stream, read on to its usage


def test_a_client_that_stops_reading_a_stream_is_cut_and_charged_what_the_upstream_produced(upstream, tmp_path):
    """A client that opens a stream and never reads it cannot hold the handler, its connection slot,
    the upstream connection and its reservation for ever: once the node's buffer is full and nothing
    more is taken within http_write_timeout_ms, the node cuts the connection and reads the stream on
    for its usage, while the client still holds its socket, unread."""
    node = NodeProcess(str(tmp_path / "node"), env=_env(upstream, ATS_HTTP_WRITE_TIMEOUT_MS="1000",
                                                      ATS_CONNECTIONS_PER_CLIENT_MAX="1",
                                                      ATS_DEFAULT_PLAN="platformium")).start()
    try:
        agent = Agent(node)
        chunks = 60_000  # ~11 MB of events: far more than the sockets and the node's buffer hold
        body = json.dumps({"model": "test-model", "stream": True, "max_tokens": 30_000, "user": f"usage=5,{chunks}",
                           "messages": [{"role": "user", "content": "go"}]}).encode()
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.bind(("127.0.0.2", 0))  # its own address, whose one connection slot this takes
        s.connect((node.host, node.port))
        s.sendall(b"POST /llm/v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Authorization: Bearer " + agent.token.encode() + b"\r\nContent-Length: "
                  + str(len(body)).encode() + b"\r\n\r\n" + body)
        try:
            # never read: the node's writes stall; 1 s later it cuts the connection and drains the upstream
            [event] = agent.wait_events(1, timeout_s=20)
            assert event["body"]["tokens_out"] == chunks  # read on to its usage, charged what was produced
            # its address's one connection slot (connections_per_client_max 1) is free again
            again = socket.create_connection((node.host, node.port), timeout=10, source_address=("127.0.0.2", 0))
            again.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert again.recv(64).startswith(b"HTTP/1.1 200"), "the cut connection still holds its slot"
            again.close()
        finally:
            s.close()
    finally:
        node.kill()


def test_sigkill_mid_call_is_charged_at_the_reservation_on_restart(upstream, tmp_path):
    node = NodeProcess(str(tmp_path / "node"), env=_env(upstream, ATS_LLM_TIMEOUT_MS="60000")).start()
    try:
        agent = Agent(node)
        before = upstream.calls.get("chat:hang-model", 0)
        pool = concurrent.futures.ThreadPoolExecutor(1)
        pending = pool.submit(_chat, agent, "hang-model", max_tokens=300)
        deadline = time.monotonic() + 10
        while upstream.calls.get("chat:hang-model", 0) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        node.kill()
        with pytest.raises(openai.APIConnectionError):
            pending.result(timeout=10)
        pool.shutdown()
        node.start()
        [event] = agent.wait_events(1)
        assert event["body"]["tokens_out"] == 300 and event["body"]["model"] == "hang-model"
        alerts = agent.get(f"/v1/agents/{agent.hex}/balance")["alerts"]
        assert any(a["type"] == "call_recovered" for a in alerts)
        assert agent.budget("act.llm_tokens")["held"] == 0
    finally:
        node.kill()
    # every counter the metered events wrote is what verify-db recomputes from the envelopes
    check = subprocess.run([sys.executable, "-m", "node", "verify-db", node.data_dir, "--json", "--quiet"],
                           capture_output=True, text=True, timeout=120, env={**os.environ, **_env(upstream)})
    assert check.returncode == 0, check.stdout[-2000:] + check.stderr[-2000:]
    assert json.loads(check.stdout)["counters"] > 0


def test_one_cost_in_headers_balance_usage_and_report(node, upstream):
    agent = Agent(node)
    costs = [int(_chat(agent, max_tokens=n).headers["x-ats-cost-milli"]) for n in (3, 6)]
    agent.wait_events(2)
    report = agent.get(f"/v1/reports/agent/{agent.hex}?period=day")
    assert report["cost_mT"] == sum(costs) == agent.budget("act.cost")["consumed"]
    assert report["by_agent"] == [{"agent": agent.hex, "events": 2, "cost_mT": sum(costs)}]
    assert sum(e["body"]["cost"] for e in agent.events()) == sum(costs)


def test_stream_that_ends_without_usage_is_charged_at_the_reservation(node, upstream):
    agent = Agent(node)
    chunks = list(agent.client.chat.completions.create(model="garbage-model", messages=[{"role": "user", "content": "x"}],
                                                       max_tokens=5, stream=True))
    assert len(chunks) == 5  # the client got what the upstream sent
    [event] = agent.wait_events(1)
    assert event["body"]["tokens_out"] == 5 and event["body"]["tokens_in"] > 0  # the reserved bound, not a guess


def test_read_only_node_refuses_calls_and_never_reaches_the_upstream(upstream, tmp_path):
    import sqlite3

    data = str(tmp_path / "node")
    with NodeProcess(data, env=_env(upstream)) as node:
        agent = Agent(node)
        _chat(agent, max_tokens=1)
        agent.wait_events(1)
    conn = sqlite3.connect(os.path.join(data, "ledger.sqlite"))
    conn.execute("UPDATE tree_hashes SET hash = zeroblob(32)")  # the startup check fails: read-only
    conn.commit()
    conn.close()
    with NodeProcess(data, env=_env(upstream)) as node:
        agent.node = node
        agent.client = openai.OpenAI(base_url=node.url + "/llm/v1", api_key=agent.token, max_retries=0, timeout=30)
        before = upstream.total()
        with pytest.raises(openai.APIStatusError) as e:
            _chat(agent, max_tokens=1)
        assert (e.value.status_code, e.value.code) == (503, "read_only") and upstream.total() == before


def test_metrics_count_gateway_calls_by_outcome(node, upstream):
    agent = Agent(node)
    _chat(agent, max_tokens=2)
    with pytest.raises(openai.BadRequestError):
        _chat(agent, model="error-model")
    with urllib.request.urlopen(node.url + "/metrics", timeout=10) as r:
        text = r.read().decode()
    values = {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line.startswith("ats_gateway")}
    assert values['ats_gateway_calls_total{outcome="charged"}'] >= 1
    assert values['ats_gateway_calls_total{outcome="released"}'] >= 1
    assert values["ats_gateway_cost_milli_total"] > 0


def test_reservation_is_capped_by_the_model_limits(upstream, tmp_path):
    env = _env(upstream, ATS_LLM_MODEL_LIMITS="test-model=100:20", ATS_LLM_BODY_BYTES_MAX="100000")
    with NodeProcess(str(tmp_path / "node"), env=env) as node:
        agent = Agent(node)
        long = [{"role": "user", "content": "y" * 5000}]
        raw = agent.client.chat.completions.with_raw_response.create(model="test-model", messages=long, max_tokens=10_000,
                                                                     stream=True)
        assert int(raw.headers["x-ats-reserved-milli"]) == (100 + 20) * TOKEN_PRICE  # not 5,000 bytes + 10,000
        list(raw.parse())
        agent.wait_events(1)


def test_anthropic_messages_whole_and_streamed_with_the_anthropic_client(node, upstream):
    import anthropic

    agent = Agent(node)
    client = anthropic.Anthropic(base_url=node.url + "/llm", api_key=agent.token, max_retries=0)
    raw = client.messages.with_raw_response.create(model="claude-test", max_tokens=4,
                                                   messages=[{"role": "user", "content": "hello"}])
    reply = raw.parse()
    assert reply.usage.output_tokens == 4
    assert int(raw.headers["x-ats-cost-milli"]) == (reply.usage.input_tokens + 4) * TOKEN_PRICE
    with client.messages.stream(model="claude-test", max_tokens=3, messages=[{"role": "user", "content": "hi"}]) as s:
        final = s.get_final_message()
    assert final.usage.output_tokens == 3
    events = agent.wait_events(2)
    assert [(e["body"]["model"], e["body"]["tokens_out"]) for e in events] == [("claude-test", 4), ("claude-test", 3)]
    assert events[1]["body"]["tokens_in"] == final.usage.input_tokens
    _chat(agent, max_tokens=1, user=f"usage={TOKENS_PER_DAY - 100},0")  # the day's tokens nearly spent
    agent.wait_events(3)
    with pytest.raises(anthropic.RateLimitError) as e:
        client.messages.create(model="claude-test", max_tokens=1000, messages=[{"role": "user", "content": "x"}])
    assert e.value.body["error"]["code"] == "budget_exceeded" and e.value.response.headers["x-should-retry"] == "false"


def test_a_large_prompt_sent_in_many_pieces_is_read_whole(node, upstream):
    agent = Agent(node)
    body = json.dumps({"model": "test-model", "max_tokens": 2,
                       "messages": [{"role": "user", "content": "z" * 40_000}]}).encode()
    u = urllib.parse.urlsplit(node.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=10)
    conn.putrequest("POST", "/llm/v1/chat/completions")
    for name, value in (("Content-Type", "application/json"), ("Authorization", f"Bearer {agent.token}"),
                        ("Content-Length", str(len(body)))):
        conn.putheader(name, value)
    conn.endheaders()
    for i in range(0, len(body), 4096):  # in pieces, with pauses: the node gets them one by one
        conn.send(body[i : i + 4096])
        time.sleep(0.002)
    resp = conn.getresponse()
    doc = json.loads(resp.read())
    conn.close()
    assert resp.status == 200 and doc["usage"]["prompt_tokens"] > 10_000
