"""The SDK against real node processes: submitting, retrying across a crash, auditing."""

from __future__ import annotations

import asyncio
import os
import socket
import time

import pytest

from ledger.checkpoint import Checkpoint
from ledger.merkle import EMPTY_ROOT
from node.sdk import AgentClient, AtsError, AtsUnreachable, Auditor, AuditFailed
from tests.agentkit import TestAgent

pytestmark = pytest.mark.integration

BODIES = {
    "act": {"op": "llm.call", "cost": 3200, "units": 120, "result": bytes(32)},
    "dat": {"src": b"\x01" * 32, "dst": b"\x02" * 32, "read": 4096, "written": 512, "dur": 35},
    "cpt": {"node": "gpu-box-1", "cpu": 4, "gpu": 1, "mem": 2048, "jobs": 2},
    "trt": {"subject": b"\x03" * 32, "type": "accuracy", "value": -250, "halflife": 86400},
}


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_agent_submits_each_metering_kind_and_usage_counts_them(node):
    async with AgentClient(node.url, os.urandom(32)) as agent:
        receipts = [await agent.submit(kind, body) for kind, body in BODIES.items()]
        assert [r["status"] for r in receipts] == ["accepted"] * 4
        assert [r["index"] for r in receipts] == [0, 1, 2, 3]
        assert all(r["origin"] == node.origin for r in receipts)
        usage = await agent.usage()
        assert {k: v["count"] for k, v in usage["totals"].items()} == {"act": 1, "dat": 1, "cpt": 1, "trt": 1}
        assert usage["totals"]["act"]["cost"] == 3200
        assert (await agent.usage(kind="cpt"))["totals"] == {"cpt": {"count": 1, "cpu": 4, "gpu": 1, "mem": 2048, "jobs": 2}}
        balance = await agent.balance()
        assert balance["agent"] == agent.public_key.hex()
        quota = await agent.quota_check("act", {"op": "llm.call", "cost": 1000})
        assert quota["allowed"] is True
        run = await agent.quota_check("run.reserve", {"run": bytes(16), "op": "agent.run", "tokens": 10, "timeout": 1000})
        assert run["allowed"] is True and run["run"]["reserved"] == 10_000 + 10 * 10


async def test_resubmitted_envelope_returns_duplicate_with_same_index(node):
    async with AgentClient(node.url, os.urandom(32)) as agent:
        envelope = agent.make_envelope("act", BODIES["act"])
        first = await agent.submit_envelope(envelope)
        again = await agent.submit_envelope(envelope)
        assert first["status"] == "accepted"
        assert again["status"] == "duplicate"
        assert (again["id"], again["index"], again["origin"]) == (first["id"], first["index"], first["origin"])
        assert (await agent.usage())["totals"]["act"]["count"] == 1


async def test_submit_batch_chunks_and_returns_one_result_per_envelope_in_order(node):
    async with AgentClient(node.url, os.urandom(32), batch_events_max=3) as agent:
        envelopes = [agent.make_envelope("act", {"op": "tool.browser", "cost": i}) for i in range(7)]
        stale = agent.make_envelope("act", {"op": "tool.browser", "cost": 1}, ts=1)
        results = await agent.submit_batch([*envelopes, envelopes[0], stale])
        assert [r.get("status") for r in results[:7]] == ["accepted"] * 7
        assert sorted(r["index"] for r in results[:7]) == list(range(7))
        assert results[7]["status"] == "duplicate" and results[7]["index"] == results[0]["index"]
        assert results[8]["error"]["code"] == "stale_timestamp"
        assert await agent.submit_batch([]) == []


async def test_submit_batch_splits_1001_envelopes_into_two_requests(make_node):
    # budgets record only: 1001 CPT events are far over one agent's hourly compute budget
    node = make_node("big", env={"ATS_BUDGETS": "false"}).start()
    async with AgentClient(node.url, os.urandom(32)) as agent:
        envelopes = [agent.make_envelope("cpt", {**BODIES["cpt"], "jobs": i}) for i in range(1001)]
        results = await agent.submit_batch(envelopes)
        assert len(results) == 1001 and {r["status"] for r in results} == {"accepted"}
        assert (await agent.usage(kind="cpt"))["totals"]["cpt"]["count"] == 1001


async def test_node_refusals_raise_ats_error_with_code_and_status(node):
    async with AgentClient(node.url, os.urandom(32)) as agent:
        with pytest.raises(AtsError) as stale:
            await agent.submit("act", BODIES["act"], ts=1)
        assert (stale.value.code, stale.value.status) == ("stale_timestamp", 409)
        forged = TestAgent().envelope()
        forged = forged[:-1] + bytes([forged[-1] ^ 1])  # flip a bit of the signature
        with pytest.raises(AtsError) as bad_sig:
            await agent.submit_envelope(forged)
        assert (bad_sig.value.code, bad_sig.value.status) == ("bad_signature", 401)
        with pytest.raises(AtsError) as local:
            agent.make_envelope("act", {"op": "llm.call", "cost": -1})
        assert (local.value.code, local.value.status) == ("invalid_body", None)
        assert agent.http.retry_count == 0  # a 4xx is the node's answer: never retried


async def test_unreachable_node_raises_after_retries():
    started = time.monotonic()
    async with AgentClient(f"http://127.0.0.1:{closed_port()}", os.urandom(32), retries=2, backoff_ms=10) as agent:
        with pytest.raises(AtsUnreachable) as e:
            await agent.submit("act", BODIES["act"])
    assert "3 attempts" in e.value.message and e.value.code == "unreachable"
    assert time.monotonic() - started < 5


async def test_retry_across_sigkill_and_restart_counts_each_envelope_once(node):
    async with AgentClient(node.url, os.urandom(32), retries=8, backoff_ms=100, timeout_s=5) as agent:
        before = agent.make_envelope("act", BODIES["act"])
        accepted = await agent.submit_envelope(before)
        in_flight = agent.make_envelope("dat", BODIES["dat"])
        while_down = agent.make_envelope("cpt", BODIES["cpt"])
        # The in-flight submission races a kill -9: it may have committed or not. Its
        # retries resend the same bytes to the restarted node (same data dir, same port).
        racing = asyncio.create_task(agent.submit_envelope(in_flight))
        await asyncio.sleep(0)
        await asyncio.to_thread(node.kill)
        down = asyncio.create_task(agent.submit_envelope(while_down))
        await asyncio.sleep(0.2)
        await asyncio.to_thread(node.start)
        raced, recovered = await asyncio.wait_for(asyncio.gather(racing, down), 30)
        assert raced["status"] in ("accepted", "duplicate")
        assert recovered["status"] == "accepted"
        assert agent.http.retry_count >= 1  # the node was down: the same bytes were resent
        replay = await agent.submit_envelope(before)
        assert (replay["status"], replay["index"]) == ("duplicate", accepted["index"])
        again = await agent.submit_envelope(in_flight)
        assert (again["status"], again["index"]) == ("duplicate", raced["index"])
        usage = await agent.usage()
        assert {k: v["count"] for k, v in usage["totals"].items()} == {"act": 1, "dat": 1, "cpt": 1}
        assert len(usage["events"]) == 3


async def test_auditor_verifies_inclusion_and_consistency_between_checkpoints(node):
    async with AgentClient(node.url, os.urandom(32)) as agent, Auditor(node.url) as tofu:
        vkey = (await tofu.node_info())["vkey"]
        first = [await agent.submit(kind, body) for kind, body in BODIES.items()]
        cp1, note1 = await tofu.checkpoint()
        assert tofu.trust_on_first_use and tofu.vkey == vkey
        assert cp1.size == 4 and note1.startswith(cp1.origin + "\n")
        async with Auditor(node.url, vkey) as auditor:
            assert not auditor.trust_on_first_use
            for r in first:
                proved = await auditor.prove_inclusion(r["id"], cp1)
                assert (proved["index"], proved["size"]) == (r["index"], 4)
            more = await agent.submit_batch([agent.make_envelope("act", {"op": "agent.run", "cost": i}) for i in range(5)])
            cp2, _ = await auditor.checkpoint()
            assert cp2.size == 9
            consistency = await auditor.prove_consistency(cp1, cp2)
            assert (consistency["from"], consistency["to"], consistency["trivial"]) == (4, 9, False)
            assert (await auditor.prove_consistency(cp2, cp2))["trivial"]
            empty = Checkpoint(cp1.origin, 0, EMPTY_ROOT)
            assert (await auditor.prove_consistency(empty, cp2))["trivial"]  # nothing to prove from size 0
            for r in [*first, *more]:
                assert (await auditor.prove_inclusion(r["id"], cp2))["index"] == r["index"]


async def test_auditor_rejects_wrong_key_wrong_root_and_rollback(node, make_node):
    other = make_node("other").start()
    async with AgentClient(node.url, os.urandom(32)) as agent:
        receipts = [await agent.submit("act", {"op": "llm.call", "cost": i}) for i in range(3)]
    async with Auditor(other.url) as about_other, Auditor(node.url) as auditor:
        other_vkey = (await about_other.node_info())["vkey"]
        cp, _ = await auditor.checkpoint()
        async with Auditor(node.url, other_vkey) as pinned_wrong:
            with pytest.raises(AuditFailed, match="does not verify"):
                await pinned_wrong.checkpoint()
        forged = Checkpoint(cp.origin, cp.size, bytes(32))  # same size, another root
        with pytest.raises(AuditFailed, match="does not lead to the checkpoint root"):
            await auditor.prove_inclusion(receipts[0]["id"], forged)
        with pytest.raises(AuditFailed, match="forked"):
            await auditor.prove_consistency(forged, cp)
        smaller = Checkpoint(cp.origin, 2, bytes(32))
        with pytest.raises(AuditFailed, match="not a prefix"):
            await auditor.prove_consistency(smaller, cp)
        with pytest.raises(AuditFailed, match="shrank"):
            await auditor.prove_consistency(cp, smaller)
        with pytest.raises(AuditFailed, match="event_not_found"):
            await auditor.prove_inclusion("00" * 32, cp)
