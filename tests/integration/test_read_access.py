"""Read credentials on loopback with read_auth = "token" (tests/netns/test_read_access.py runs the
same boundaries on a node that really listens off loopback, where "auto" closes reads)."""

import os
import subprocess
import sys
import time

import pytest

from node.keys import write_key
from tests.agentkit import TestAgent
from tests.integration.http import request
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_budgets import AUTH, USER, policy_env, submit

pytestmark = pytest.mark.integration

ALICE = TestAgent(bytes([41]) * 32)


def read(node, path, token=None):
    reply = request(node.url, "GET", path, headers={"Authorization": f"Bearer {token}"} if token else None)
    return reply.status, reply.code


def ats(*args, token=None):
    env = {**os.environ, "ATS_URL": "http://127.0.0.1:9"}
    env.pop("ATS_TOKEN", None)
    if token:
        env["ATS_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=30, env=env)


def test_read_tokens_from_the_cli_open_reads_and_revoked_or_foreign_ones_do_not(tmp_path):
    key = str(tmp_path / "authority.key")
    write_key(key, AUTH[0].seed)
    with NodeProcess(str(tmp_path / "n"), env=policy_env(ATS_READ_AUTH="token")) as node:
        body = {"agent": ALICE.public_key, "user": USER.public_key, "team": "ops", "platform": "edge",
                "plan": "premium", "name": "alice"}
        assert submit(node, AUTH[0], "agent.register", body).status == 201
        assert read(node, "/v1/agents/alice/balance") == (401, "read_token_required")
        assert read(node, "/v1/log/checkpoint")[0] == 200  # log_public (default)
        out = ats("token", "grant", "team", "ops", "--days", "1", "--key", key, "--url", node.url)
        assert out.returncode == 0, out.stderr
        ops = out.stdout.strip()
        assert ops.startswith("atsr_") and "read token for team ops until" in out.stderr
        assert read(node, "/v1/agents/alice/balance", ops) == (200, None)
        assert read(node, "/v1/reports/team/other", ops) == (403, "token_scope")
        assert read(node, "/v1/agents/alice/balance", ops + "x") == (401, "bad_token")
        # the CLI reads with $ATS_TOKEN
        assert ats("balance", "alice", "--url", node.url).returncode == 1
        out = ats("balance", "alice", "--url", node.url, token=ops)
        assert out.returncode == 0 and out.stdout.startswith("agent alice"), out.stderr
        # an auditor reads no balances; a token that has expired nothing
        out = ats("token", "grant", "all", "all", "--audit", "--key", key, "--url", node.url)
        assert read(node, "/v1/agents/alice/balance", out.stdout.strip()) == (403, "token_scope")
        out = ats("token", "grant", "team", "ops", "--days", "0.00002", "--key", key, "--url", node.url)  # ~1.7 s
        brief = out.stdout.strip()
        time.sleep(2)
        assert read(node, "/v1/agents/alice/balance", brief) == (401, "token_expired")
        # a non-authority cannot grant; a revoked token reads nothing, on this node or after a restart
        intruder = str(tmp_path / "intruder.key")
        write_key(intruder, os.urandom(32))
        out = ats("token", "grant", "all", "all", "--key", intruder, "--url", node.url)
        assert out.returncode == 1 and "not_authority" in out.stderr
        out = ats("token", "revoke", ops, "--key", key, "--url", node.url)
        assert out.returncode == 0, out.stderr
        assert read(node, "/v1/agents/alice/balance", ops) == (401, "token_revoked")
        node.restart()
        assert read(node, "/v1/agents/alice/balance", ops) == (401, "token_revoked")
