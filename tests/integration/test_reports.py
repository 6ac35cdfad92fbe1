"""Usage reports, anomaly alerts and /metrics on a real node process (docs/reports.md)."""

from __future__ import annotations

import csv
import io
import math
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time

import pytest

from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor, request
from tests.integration.nodeproc import NodeProcess

STEADY_EVENTS = 60
SPIKE_EVENTS = 5


@pytest.fixture(scope="module")
def spiked(tmp_path_factory):
    """A node, and an agent that sent steady traffic then a 10× cost spike (and one stale event)."""
    node = NodeProcess(str(tmp_path_factory.mktemp("reports") / "node")).start()
    try:
        agent = TestAgent()
        rng = random.Random(7)
        now = int(time.time() * 1000)
        ts0 = now - (STEADY_EVENTS + SPIKE_EVENTS + 5) * 1000
        for i in range(STEADY_EVENTS + SPIKE_EVENTS):
            factor = 10 if i >= STEADY_EVENTS else 1
            cost = int(1000 * math.exp(rng.gauss(0, 0.2))) * factor
            body = {"op": "llm.call" if i % 3 else "tool.browser", "cost": cost, "units": 100}
            reply = post_cbor(node.url, "/v1/events", agent.envelope("act", body, ts0 + i * 1000))
            assert reply.status == 201, reply.body
        stale = post_cbor(node.url, "/v1/events", agent.envelope("act", None, now - 3_600_000))
        assert stale.status == 409
        yield node, agent
    finally:
        node.kill()


def test_spike_raises_one_anomaly_alert_in_balance_and_report(spiked):
    node, agent = spiked
    balance = get(node.url, f"/v1/agents/{agent.public_key.hex()}/balance").json()
    anomalies = [a for a in balance["alerts"] if a["type"] == "anomaly"]
    assert [a["metric"] for a in anomalies] == ["act.cost"], balance["alerts"]  # hysteresis: one per burst
    # value is the mean of the last 4 events: flagged at the first spiked event, (10 + 3) / 4 = 3.25× the baseline
    assert anomalies[0]["detail"]["value"] > 2.5 * anomalies[0]["detail"]["expected"]
    report = get(node.url, f"/v1/reports/agent/{agent.public_key.hex()}?period=day").json()
    assert [(a["agent"], a["metric"]) for a in report["anomalies"]] == [(agent.public_key.hex(), "act.cost")]
    assert "anomalies" in [r["code"] for r in report["recommendations"]]


def test_spike_costs_the_agent_a_node_signed_trust_penalty(spiked):
    node, agent = spiked
    conn = sqlite3.connect(os.path.join(node.data_dir, "ledger.sqlite"))
    try:
        rows = conn.execute("SELECT signer FROM entries WHERE kind = 'trt' AND subject = ?", (agent.public_key,)).fetchall()
    finally:
        conn.close()
    assert rows == [(bytes.fromhex(node.origin),)]


def test_agent_report_totals_cost_breakdowns_and_series(spiked):
    node, agent = spiked
    doc = get(node.url, f"/v1/reports/agent/{agent.public_key.hex()}").json()
    assert doc["scope"] == "agent" and doc["period"]["kind"] == "day"
    act = doc["totals"]["ACT"]
    assert act["events"] == STEADY_EVENTS + SPIKE_EVENTS
    assert act["act.llm_tokens"] == 100 * sum(1 for i in range(STEADY_EVENTS + SPIKE_EVENTS) if i % 3)
    # one cost: what the events added to act.cost (the costs they declared), as the budget shows it
    assert doc["cost_mT"] == act["act.cost"]
    budget = next(b for b in doc["budgets"] if b["metric"] == "act.cost" and b["scope"] == "agent")
    assert budget["consumed"] == doc["cost_mT"]
    assert doc["cost_T"] == f"{doc['cost_mT'] // 1000}.{doc['cost_mT'] % 1000:03d}"
    assert doc["by_agent"] == [{"agent": agent.public_key.hex(), "events": act["events"], "cost_mT": doc["cost_mT"]}]
    assert {r["op"] for r in doc["by_operation"]} == {"llm.call", "tool.browser"}
    assert doc["by_member"][0]["user"] is None  # unregistered
    points = doc["series"]["points"]
    assert doc["series"]["bucket_ms"] == 3_600_000 and len(points) == 24
    assert sum(p["ACT"] for p in points) == act["events"] and sum(p["cost_mT"] for p in points) == doc["cost_mT"]
    assert doc["previous"]["cost_mT"] == 0 and doc["trend"]["cost_pct"] is None
    assert any(b["metric"] == "act.cost" and b["scope"] == "agent" for b in doc["budgets"])
    node_doc = get(node.url, "/v1/reports/node/all?period=month").json()
    assert node_doc["totals"]["ACT"]["events"] == act["events"]
    assert node_doc["totals"]["TRT"]["events"] == 1  # the node's penalty record


def test_report_as_csv_has_a_header_and_one_row_per_section_key_field(spiked):
    node, agent = spiked
    reply = request(node.url, "GET", f"/v1/reports/agent/{agent.public_key.hex()}", headers={"Accept": "text/csv"})
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(reply.body.decode())))
    assert rows[0] == ["section", "key", "field", "value"]
    json_doc = get(node.url, f"/v1/reports/agent/{agent.public_key.hex()}?format=json").json()
    assert ["cost", "total", "cost_mT", str(json_doc["cost_mT"])] in rows
    assert ["totals", "ACT", "events", str(STEADY_EVENTS + SPIKE_EVENTS)] in rows
    assert len({tuple(r[:3]) for r in rows[1:]}) == len(rows) - 1


@pytest.mark.parametrize("path, status, code", [
    ("/v1/reports/galaxy/x", 404, "unknown_scope"),
    ("/v1/reports/node/elsewhere", 404, "scope_not_found"),
    ("/v1/reports/team/no-such-team", 404, "scope_not_found"),
    ("/v1/reports/agent/" + "ab" * 32, 404, "scope_not_found"),
    ("/v1/reports/agent/xyz", 404, "unknown_name"),  # a name no agent.register gave
    ("/v1/reports/agent/XYZ", 422, "bad_parameter"),  # neither a name nor a key
    ("/v1/reports/node/all?period=year", 422, "bad_period"),
    ("/v1/reports/node/all?at=yesterday", 422, "bad_parameter"),
    ("/v1/reports/node/all?format=xml", 422, "bad_parameter"),
])
def test_report_bad_input_gets_its_stable_code(spiked, path, status, code):
    node, _agent = spiked
    reply = get(node.url, path)
    assert (reply.status, reply.code) == (status, code), reply.body


def test_cli_report_prints_a_table_and_csv(spiked):
    node, agent = spiked
    cmd = [sys.executable, "-m", "node", "report", "agent", agent.public_key.hex(), "--url", node.url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "cost " in out.stdout and "by operation" in out.stdout and "recommendations" in out.stdout
    out = subprocess.run(cmd + ["--csv"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stdout.startswith("section,key,field,value")
    bad = subprocess.run([*cmd[:4], "galaxy", "x", "--url", node.url], capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "unknown_scope" in bad.stderr


def test_metrics_pass_promtool_and_cover_budgets_rejections_and_anomalies(spiked):
    node, _agent = spiked
    promtool = shutil.which("promtool")
    assert promtool, "promtool is missing: install the Debian package `prometheus` (apt-get install prometheus)"
    body = get(node.url, "/metrics").body
    check = subprocess.run([promtool, "check", "metrics"], input=body, capture_output=True, timeout=60)
    assert check.returncode == 0, (check.stdout + check.stderr).decode()
    text = body.decode()
    assert 'ats_anomalies_total{metric="act.cost"} 1' in text
    assert 'ats_rejections_total{code="stale_timestamp"} 1' in text
    assert 'ats_admissions_total{status="accepted"} 65' in text
    assert 'ats_budget_consumed{metric="act.cost",scope="agent"' in text
    assert 'ats_budget_status{metric="act.cost",scope="agent"' in text


def test_suspended_agent_is_flagged_in_the_report_not_ranked_as_cheap(tmp_path):
    node = NodeProcess(str(tmp_path / "node")).start()
    try:
        spender, other = TestAgent(), TestAgent()
        assert post_cbor(node.url, "/v1/events", spender.envelope("act", {"op": "llm.call", "cost": 5_000_000})).status == 201
        refused = post_cbor(node.url, "/v1/events", spender.envelope("act", {"op": "llm.call", "cost": 600_000}))
        assert refused.status == 429  # past hard + reserve: refused, and the agent suspended until the day ends
        assert post_cbor(node.url, "/v1/events", other.envelope("act", {"op": "llm.call", "cost": 7})).status == 201
        rows = get(node.url, "/v1/reports/node/all?period=day").json()["by_agent"]
        flags = {r["agent"]: r.get("suspended", False) for r in rows if r["agent"] != node.origin}  # the node's records
        assert flags == {spender.public_key.hex(): True, other.public_key.hex(): False}
    finally:
        node.kill()
