"""Fuzz tier: schemathesis over the OpenAPI this node serves, every operation, against a real node.

No answer may be a 5xx, and every answer must conform to the description (status code listed,
content type, body schema, headers). Bounded in time (`FUZZ_SECONDS`); the seed is random unless
`ATS_FUZZ_SEED` is set, and a failure prints it with the schemathesis report, so it replays.
A longer run: scripts/fuzz_node.py.
"""

import os
import random
import re
import subprocess
import sys

import pytest

from tests.agentkit import TestAgent
from tests.integration.fake_openai import FakeOpenAI
from tests.integration.http import get, post_cbor
from tests.integration.nodeproc import NodeProcess

FUZZ_SECONDS = 45
CHECKS = ",".join(("not_a_server_error", "status_code_conformance", "content_type_conformance",
                   "response_schema_conformance", "response_headers_conformance"))


@pytest.fixture
def node(tmp_path):
    """A node with every optional path on: the LLM gateway (before an OpenAI-compatible upstream the
    test stands) and the task meter, so that the /llm/v1 operations are fuzzed as served."""
    with FakeOpenAI() as upstream:
        env = {"ATS_LLM_GATEWAY": "true", "ATS_LLM_UPSTREAM": upstream.url, "ATS_LLM_ANTHROPIC_UPSTREAM": upstream.url,
               "ATS_LLM_TIMEOUT_MS": "5000"}
        proc = NodeProcess(str(tmp_path / "node"), env=env).start()
        try:
            yield proc
        finally:
            proc.kill()


def test_every_operation_of_the_served_openapi_survives_schemathesis(node, tmp_path):
    agent = TestAgent()
    for _ in range(3):  # something to read: entries, proofs, usage, reports
        assert post_cbor(node.url, "/v1/events", agent.envelope()).status == 201
    seed = int(os.environ.get("ATS_FUZZ_SEED") or random.randrange(2**32))
    cmd = [sys.executable, "-m", "schemathesis.cli", "run", node.url + "/v1/openapi.json", "--url", node.url,
           "--checks", CHECKS, "--max-time", str(FUZZ_SECONDS), "--max-examples", "25", "--seed", str(seed),
           "--workers", "1", "--request-timeout", "10", "--no-shrink", "--warnings", "off"]
    # cwd: schemathesis keeps a cache folder where it runs; not in the source tree
    run = subprocess.run(cmd, capture_output=True, text=True, timeout=FUZZ_SECONDS + 60, cwd=tmp_path)
    assert run.returncode == 0, f"ATS_FUZZ_SEED={seed}\n{run.stdout[-8000:]}\n{run.stderr[-2000:]}"
    selected = re.search(r"Selected: (\d+)/(\d+)", run.stdout)
    tested = re.search(r"Tested: (\d+)", run.stdout)
    assert selected and tested and selected.group(1) == selected.group(2) == tested.group(1), run.stdout[-3000:]
    reply = get(node.url, "/healthz")
    assert reply.status == 200 and reply.json()["status"] == "ok"
