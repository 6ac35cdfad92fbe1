"""Who may read what, on a node that really listens off loopback (10.213.0.2, in namespaces named own…).

Every boundary both ways: without a credential a read is refused, with the right one it is served,
with one for another scope (or expired, revoked, forged) it is refused with its code.
"""

from __future__ import annotations

import base64
import json
import os
import time

import pytest

from ledger.readgrants import token_hash
from ledger.signing import sign_raw
from tests.agentkit import TestAgent

pytestmark = pytest.mark.netns

AUTH = TestAgent(bytes([1]) * 32)
USER = TestAgent(bytes([10]) * 32)
ALICE = TestAgent(bytes([31]) * 32)  # team ops
BOB = TestAgent(bytes([32]) * 32)  # team research
ENV = {"ATS_AUTHORITIES": AUTH.public_key.hex(), "ATS_GOVERNANCE_THRESHOLD": "1"}


def b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def jwt(signer: TestAgent, sub: bytes, aud: str = "ats-read", exp_in_s: int = 600) -> str:
    head = b64(json.dumps({"alg": "EdDSA", "typ": "JWT"}).encode())
    claims = b64(json.dumps({"sub": sub.hex(), "aud": aud, "exp": int(time.time()) + exp_in_s}).encode())
    return f"{head}.{claims}.{b64(sign_raw(f'{head}.{claims}'.encode(), signer.seed))}"


def submit(c, signer, kind, body):
    status, _, raw = c.request(0, "POST", "/v1/events", signer.envelope(kind, body),
                               headers={"Content-Type": "application/cbor"})
    assert status == 201, raw
    return json.loads(raw)


def grant(c, scope, scope_id, role="read", expires_in_ms=3_600_000):
    token = "atsr_" + b64(os.urandom(32))
    submit(c, AUTH, "read.grant", {"token": token_hash(token), "scope": scope, "id": scope_id, "role": role,
                                   "expires": int(time.time() * 1000) + expires_in_ms})
    return token


def read(c, path, token=None):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    status, _, raw = c.request(0, "GET", path, headers=headers)
    code = json.loads(raw)["error"]["code"] if status >= 400 else None
    return status, code


def test_reads_off_loopback_need_a_credential_that_covers_them(cluster):
    c = cluster(1, env=ENV, prefix="own")
    for agent, team, name in ((ALICE, "ops", "alice"), (BOB, "research", "bob")):
        submit(c, AUTH, "agent.register", {"agent": agent.public_key, "user": USER.public_key, "team": team,
                                           "platform": "edge", "plan": "premium", "name": name})
        submit(c, agent, "act", {"op": "llm.call", "cost": 1000, "units": 10})
    alice, bob = f"/v1/agents/{ALICE.public_key.hex()}", "/v1/agents/bob"
    # no credential: every read is refused; identity, health and the public log stay open
    for path in (f"{alice}/balance", f"{alice}/usage", "/v1/reports/team/ops", "/v1/budgets", "/metrics",
                 "/v1/names/alice"):
        assert read(c, path) == (401, "read_token_required"), path
    for path in ("/v1/node", "/healthz", "/v1/log/checkpoint"):
        assert read(c, path)[0] == 200, path
    # an agent's own JWT reads its own data, nobody else's
    own = jwt(ALICE, ALICE.public_key)
    assert read(c, f"{alice}/balance", own) == (200, None)
    assert read(c, "/v1/agents/alice/usage", own) == (200, None)
    assert read(c, f"/v1/reports/agent/{ALICE.public_key.hex()}", own) == (200, None)
    assert read(c, f"{bob}/balance", own) == (403, "token_scope")
    assert read(c, "/v1/reports/team/ops", own) == (403, "token_scope")
    assert read(c, f"{alice}/balance", jwt(ALICE, ALICE.public_key, aud="ats-gateway")) == (401, "bad_token")
    assert read(c, f"{alice}/balance", jwt(BOB, ALICE.public_key)) == (401, "bad_token")  # forged: not alice's key
    assert read(c, f"{alice}/balance", jwt(ALICE, ALICE.public_key, exp_in_s=-120)) == (401, "token_expired")  # past the 60 s leeway
    # a team reader sees the team and its agents, not another team, not the node
    ops = grant(c, "team", "ops")
    assert read(c, f"{alice}/balance", ops) == (200, None)
    assert read(c, "/v1/reports/team/ops", ops) == (200, None)
    assert read(c, "/v1/budgets?scope=team&id=ops", ops) == (200, None)
    assert read(c, f"{bob}/balance", ops) == (403, "token_scope")
    assert read(c, "/v1/reports/team/research", ops) == (403, "token_scope")
    assert read(c, "/metrics", ops) == (403, "token_scope")
    # the platform's reader (all) sees everything; an unknown token nothing
    everything = grant(c, "all", "all")
    for path in (f"{bob}/balance", "/v1/reports/team/research", "/metrics", "/v1/budgets"):
        assert read(c, path, everything) == (200, None), path
    assert read(c, f"{alice}/balance", "atsr_" + b64(os.urandom(32))) == (401, "bad_token")
    # revoked and expired tokens read nothing
    submit(c, AUTH, "read.revoke", {"token": token_hash(ops), "reason": "left the team"})
    assert read(c, f"{alice}/balance", ops) == (401, "token_revoked")
    brief = grant(c, "team", "ops", expires_in_ms=1500)
    assert read(c, f"{alice}/balance", brief) == (200, None)
    time.sleep(2)
    assert read(c, f"{alice}/balance", brief) == (401, "token_expired")
    # the owner closes the log: only an auditor (or an all reader) reads it; an auditor reads no balances
    audit = grant(c, "all", "all", role="audit")
    team2 = grant(c, "team", "ops")
    dash = "netns-dashboard-token-0123"
    c.restart(0, env={**ENV, "ATS_LOG_PUBLIC": "false", "ATS_DASHBOARD_TOKEN": dash})
    assert read(c, "/v1/log/checkpoint") == (401, "read_token_required")
    assert read(c, "/v1/log/entries?start=0&end=1") == (401, "read_token_required")
    assert read(c, "/v1/log/checkpoint", team2) == (403, "token_scope")
    assert read(c, "/v1/log/checkpoint", audit) == (200, None)
    assert read(c, "/v1/log/checkpoint", everything) == (200, None)
    assert read(c, f"{alice}/balance", audit) == (403, "token_scope")
    assert read(c, f"{alice}/balance", team2) == (200, None)  # grants survive the restart (the log is folded)
    # the dashboard's own token keeps working; a team's read token opens that team's dashboard data
    assert read(c, "/v1/dashboard/budgets?team=ops", dash) == (200, None)
    # the dashboard token is the owner's: the page's own reads (reports, metrics, the log) work with it
    for path in ("/v1/reports/team/ops", "/metrics", "/v1/log/checkpoint", f"{alice}/balance"):
        assert read(c, path, dash) == (200, None), path
    status, headers, _ = c.request(0, "GET", f"/?token={dash}")
    cookie = headers["set-cookie"].split(";")[0]
    status, _, _ = c.request(0, "GET", "/v1/reports/team/ops?period=day", headers={"Cookie": cookie})
    assert status == 200
    assert read(c, "/v1/dashboard/budgets?team=ops") == (401, "token_required")
    assert read(c, "/v1/dashboard/budgets?team=ops", team2) == (200, None)
    assert read(c, "/v1/dashboard/budgets?team=research", team2) == (403, "token_scope")
    assert read(c, "/v1/dashboard/agents", team2) == (403, "token_scope")
    assert read(c, "/v1/dashboard/agents", everything) == (200, None)
