"""Budgets, quotas, plans, runs and governance enforced at admission, on real node processes."""

import json
import os
import sqlite3
import time

import pytest

from node.keys import write_key
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor, post_json
from tests.integration.nodeproc import NodeProcess

AUTH = [TestAgent(bytes([i]) * 32) for i in (1, 2, 3)]
ORACLE = TestAgent(bytes([9]) * 32)
USER = TestAgent(bytes([10]) * 32)


def policy_env(**extra):
    env = {
        "ATS_AUTHORITIES": ",".join(a.public_key.hex() for a in AUTH),
        "ATS_ORACLES": ORACLE.public_key.hex(),
        "ATS_GOVERNANCE_THRESHOLD": "2",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture
def gnode(tmp_path):
    proc = NodeProcess(str(tmp_path / "node"), env=policy_env()).start()
    try:
        yield proc
    finally:
        proc.kill()


def submit(node, signer, kind, body, ts=None):
    return post_cbor(node.url, "/v1/events", signer.envelope(kind, body, ts))


def register(node, agent, plan="freemium", team="research", platform="edge", **limits):
    body = {"agent": agent.public_key, "user": USER.public_key, "team": team, "platform": platform, "plan": plan, **limits}
    reply = submit(node, AUTH[0], "agent.register", body)
    assert reply.status == 201, reply.body
    return reply


def balance(node, agent):
    return get(node.url, f"/v1/agents/{agent.public_key.hex()}/balance").json()


def budget_of(bal, scope, metric, window=None):
    for b in bal["budgets"]:
        if b["scope"] == scope and b["metric"] == metric and (window is None or b["window"] == window):
            return b
    raise AssertionError(f"no {scope} {metric} budget in {json.dumps(bal)[:500]}")


def act(cost, op="llm.call", units=0):
    return {"op": op, "cost": cost, "units": units}


def entries_of_kind(node, kind):
    conn = sqlite3.connect(os.path.join(node.data_dir, "ledger.sqlite"))
    try:
        return conn.execute("SELECT count(*) FROM entries WHERE kind = ?", (kind,)).fetchone()[0]
    finally:
        conn.close()


def test_event_charges_agent_and_every_ancestor_scope(gnode):
    agent = TestAgent()
    register(gnode, agent)
    reply = submit(gnode, agent, "act", act(1200, units=300))
    assert reply.status == 201
    # the receipt reports every limit the event touched: here the agent's (ancestors have no plan yet)
    limited = {(b["scope"], b["metric"]) for b in reply.json()["budgets"]}
    assert {("agent", "act.cost"), ("agent", "act.llm_tokens"), ("agent", "events")} <= limited
    bal = balance(gnode, agent)
    assert bal["registered"] is True
    assert [s["scope"] for s in bal["scopes"]] == ["agent", "user", "team", "platform"]
    for scope in ("agent", "user", "team", "platform"):
        assert budget_of(bal, scope, "act.cost")["consumed"] == 1200
    assert budget_of(bal, "agent", "act.llm_tokens")["consumed"] == 300
    assert budget_of(bal, "agent", "act.cost")["allocated"] == 5_000_000
    assert budget_of(bal, "agent", "act.cost")["status"] == "healthy"
    # a team plan gives the team scope its own limits, shared by its agents
    assign = submit(gnode, AUTH[0], "plan.assign", {"scope": "team", "id": "research", "plan": "freemium"})
    assert assign.status == 201
    other = TestAgent()
    register(gnode, other)
    for a in (agent, other):
        for _ in range(10):
            assert submit(gnode, a, "act", act(1, op="agent.run")).status == 201
    over = submit(gnode, other, "act", act(1, op="agent.run"))  # the team's 21st run today
    assert over.status == 429 and over.code == "budget_exceeded" and "team" in over.json()["error"]["message"]
    team = budget_of(balance(gnode, other), "team", "act.runs")
    assert (team["allocated"], team["consumed"]) == (20, 20)


def test_policy_records_need_an_authority_and_change_nothing_otherwise(gnode):
    agent = TestAgent()
    intruder = TestAgent()
    body = {"agent": agent.public_key, "user": USER.public_key, "team": "t", "platform": "p", "plan": "premium"}
    reply = submit(gnode, intruder, "agent.register", body)
    assert reply.status == 403 and reply.code == "not_authority"
    reply = submit(gnode, intruder, "stake.set", {"agent": agent.public_key, "amount": 20000})
    assert reply.status == 403 and reply.code == "not_authority"
    reply = submit(gnode, AUTH[0], "stake.set", {"agent": agent.public_key, "amount": 20000})
    assert reply.status == 403  # stakes come from oracles only
    reply = submit(gnode, AUTH[0], "agent.register", {**body, "plan": "gold"})
    assert reply.status == 422 and reply.code == "unknown_plan"
    assert entries_of_kind(gnode, "agent.register") == 0
    assert balance(gnode, agent)["registered"] is False


def test_unregistered_agents_get_the_default_plan_or_are_refused(tmp_path):
    agent = TestAgent()
    with NodeProcess(str(tmp_path / "open"), env=policy_env()) as node:
        assert submit(node, agent, "act", act(10)).status == 201
        assert balance(node, agent)["scopes"] == [{"scope": "agent", "id": agent.public_key.hex(), "plan": "freemium"}]
    with NodeProcess(str(tmp_path / "closed"), env=policy_env(ATS_UNREGISTERED_AGENTS="refuse")) as node:
        reply = submit(node, agent, "act", act(10))
        assert reply.status == 422 and reply.code == "unknown_agent"
        register(node, agent)
        assert submit(node, agent, "act", act(10)).status == 201


def test_reserve_then_hard_limit_rejects_with_retry_after_and_suspends_until_lifted(gnode):
    agent = TestAgent()
    register(gnode, agent)
    # 5,200 of 5,000 weight: past hard (100 %) but within the 10 % emergency reserve
    first = submit(gnode, agent, "act", act(5_200_000))
    assert first.status == 201
    b = budget_of(first.json(), "agent", "act.cost")
    assert b["status"] == "critical" and "reserve" in b["flags"]
    # 5,700 > 5,500: rejected, Retry-After to the end of the UTC day, and ACT suspends
    second = submit(gnode, agent, "act", act(500_000))
    assert second.status == 429 and second.code == "budget_exceeded"
    retry = int(second.headers["retry-after"])
    now_s = time.time()
    day_end = (int(now_s) // 86400 + 1) * 86400
    assert abs(retry - (day_end - now_s)) < 30
    third = submit(gnode, agent, "act", act(1))
    assert third.status == 429 and third.code == "suspended"
    bal = balance(gnode, agent)
    assert bal["suspended"] is True and bal["suspension"]["metric"] == "act.cost"
    types = {a["type"] for a in bal["alerts"]}
    assert {"hard_limit", "reserve", "suspended"} <= types
    assert entries_of_kind(gnode, "agent.suspended") == 1
    # the node's own trust record lowers the agent's reputation (counted from tomorrow's score)
    assert entries_of_kind(gnode, "trt") == 1
    # an authority lifts the suspension; the budget itself is still spent
    lift = submit(gnode, AUTH[1], "agent.lift", {"agent": agent.public_key, "reason": "reviewed"})
    assert lift.status == 201
    assert balance(gnode, agent)["suspended"] is False
    dat = submit(gnode, agent, "dat", {"src": bytes(32), "dst": bytes(32), "read": 10, "written": 10, "dur": 1})
    assert dat.status == 201
    assert submit(gnode, agent, "act", act(400_000)).code == "budget_exceeded"  # 5,600 > 5,500


def test_soft_limit_warns_then_throttles(gnode):
    agent = TestAgent()
    register(gnode, agent)
    warned = submit(gnode, agent, "act", act(4_100_000))  # 82 % of the daily ACT budget
    assert warned.status == 201
    b = budget_of(warned.json(), "agent", "act.cost")
    assert b["status"] == "warning" and {"warning", "throttled"} <= set(b["flags"])
    throttled = submit(gnode, agent, "act", act(100_000))
    assert throttled.status == 429 and throttled.code == "throttled"
    assert int(throttled.headers["retry-after"]) >= 1
    alerts = balance(gnode, agent)["alerts"]
    assert [a["type"] for a in alerts] == ["soft_limit"]


def test_plan_quota_with_stake_multiplier(gnode):
    agent = TestAgent()
    register(gnode, agent)  # freemium: 20 agent runs a day
    for _ in range(20):
        assert submit(gnode, agent, "act", act(1, op="agent.run")).status == 201
    over = submit(gnode, agent, "act", act(1, op="agent.run"))
    assert over.status == 429 and over.code == "budget_exceeded"
    # stake 1,000 → ×1.25: 25 runs
    assert submit(gnode, ORACLE, "stake.set", {"agent": agent.public_key, "amount": 1000}).status == 201
    for _ in range(5):
        assert submit(gnode, agent, "act", act(1, op="agent.run")).status == 201
    assert submit(gnode, agent, "act", act(1, op="agent.run")).code == "budget_exceeded"
    bal = balance(gnode, agent)
    runs = budget_of(bal, "agent", "act.runs")
    assert (runs["allocated"], runs["consumed"], runs["source"]) == (25, 25, "agent_runs_per_day")
    assert bal["multipliers"]["stake"] == "5/4" and bal["stake"] == 1000


def test_reputation_from_yesterdays_ratings_scales_limits(tmp_path):
    env = policy_env(ATS_SKEW_MS=str(3 * 86_400_000))
    with NodeProcess(str(tmp_path / "n"), env=env) as node:
        agent = TestAgent()
        register(node, agent)
        yesterday = int(time.time() * 1000) - 86_400_000
        # Beta(3, 1) prior: seven full ratings give (7 + 3) / (7 + 4) ≈ 0.909 ≥ 0.9
        assert balance(node, agent)["reputation_ppm"] == 750_000
        for _ in range(7):
            body = {"subject": agent.public_key, "type": "accuracy", "value": 1000, "halflife": 30 * 86400}
            assert submit(node, USER, "trt", body, ts=yesterday).status == 201
        bal = balance(node, agent)
        assert bal["reputation_ppm"] >= 900_000
        assert bal["multipliers"]["reputation"] == "3/2"
        assert budget_of(bal, "agent", "act.cost")["allocated"] == 7_500_000
        assert budget_of(bal, "agent", "act.runs")["allocated"] == 30


def test_run_reservation_lifecycle(gnode):
    agent = TestAgent()
    register(gnode, agent, max_cost_per_run=40_000, max_parallel_runs=1, max_tokens_per_run=100_000,
             allowed_tools=["tool.browser"])
    run = os.urandom(16)
    # estimate first: priced from the table (agent.run 10 T + 0.01 T per token, in milli-T), nothing recorded
    est = post_json(gnode.url, "/v1/quota/check", {"agent": agent.public_key.hex(), "kind": "run.reserve",
                                                   "body": {"run": run.hex(), "op": "agent.run", "tokens": 2000,
                                                            "timeout": 60000}})
    assert est.status == 200 and est.json()["allowed"] is True
    assert est.json()["run"]["reserved"] == 10_000 + 2000 * 10
    reserve = submit(gnode, agent, "run.reserve", {"run": run, "op": "agent.run", "tokens": 2000,
                                                   "tools": ["tool.browser"], "timeout": 60000})
    assert reserve.status == 201
    assert reserve.json()["run"]["state"] == "pending" and reserve.json()["run"]["held"] == 30_000
    assert budget_of(balance(gnode, agent), "agent", "act.cost")["held"] == 30_000
    # one run at a time; forbidden tools and over-limit estimates are refused
    other = {"run": os.urandom(16), "op": "agent.run", "tokens": 10, "timeout": 60000}
    assert submit(gnode, agent, "run.reserve", other).code == "too_many_runs"
    assert submit(gnode, agent, "run.reserve", {**other, "tools": ["tool.shell"]}).code == "tool_not_allowed"
    assert submit(gnode, agent, "run.reserve", {**other, "tokens": 200_000}).code == "run_limit_exceeded"
    # charges within the estimate move the hold into consumption
    charge = submit(gnode, agent, "run.charge", {"run": run, "cost": 10_000, "tokens": 900})
    assert charge.status == 201 and charge.json()["run"]["stop"] is False
    assert charge.json()["run"]["held"] == 20_000
    # passing the estimate midway: told to stop
    over = submit(gnode, agent, "run.charge", {"run": run, "cost": 25_000, "tokens": 900})
    assert over.json()["run"]["stop"] is True  # spent 35,000 of a 30,000 estimate
    past = submit(gnode, agent, "run.charge", {"run": run, "cost": 10_000, "tokens": 0})
    assert past.json()["run"]["stop"] is True and past.json()["run"]["spent"] == 45_000  # over max_cost_per_run
    post = submit(gnode, agent, "run.post", {"run": run, "cost": 0, "tokens": 0, "score": 900})
    assert post.json()["run"]["state"] == "posted"
    bal = balance(gnode, agent)
    cost = budget_of(bal, "agent", "act.cost")
    assert (cost["consumed"], cost["held"]) == (45_000, 0)
    assert budget_of(bal, "agent", "act.runs")["consumed"] == 1
    # a good performance score issues trust from the node
    assert entries_of_kind(gnode, "trt") == 1
    # unknown and closed runs change nothing
    assert submit(gnode, agent, "run.void", {"run": run}).code == "unknown_run"
    assert submit(gnode, agent, "run.charge", {"run": os.urandom(16), "cost": 1, "tokens": 1}).code == "unknown_run"
    assert submit(gnode, agent, "run.reserve", {"run": run, "op": "agent.run", "tokens": 1, "timeout": 1000}).code == "run_exists"


def test_reservation_expires_and_is_voidable(gnode):
    agent = TestAgent()
    register(gnode, agent)
    run = os.urandom(16)
    assert submit(gnode, agent, "run.reserve", {"run": run, "op": "agent.run", "tokens": 10, "timeout": 500}).status == 201
    time.sleep(0.8)
    assert submit(gnode, agent, "run.charge", {"run": run, "cost": 1, "tokens": 1}).code == "unknown_run"
    assert budget_of(balance(gnode, agent), "agent", "act.cost")["held"] == 0
    run2 = os.urandom(16)
    assert submit(gnode, agent, "run.reserve", {"run": run2, "op": "agent.run", "tokens": 10, "timeout": 60000}).status == 201
    assert submit(gnode, agent, "run.void", {"run": run2}).json()["run"]["state"] == "voided"
    assert budget_of(balance(gnode, agent), "agent", "act.cost")["held"] == 0


def test_parallel_reservations_cannot_together_overshoot(gnode):
    agent = TestAgent()
    register(gnode, agent)
    body = {"op": "agent.run", "tokens": 0, "cost": 3_000_000, "timeout": 60000}
    assert submit(gnode, agent, "run.reserve", {**body, "run": os.urandom(16)}).status == 201
    # 3,000 + 3,000 > 5,000 + 500 reserve: the second estimate does not fit
    second = submit(gnode, agent, "run.reserve", {**body, "run": os.urandom(16)})
    assert second.status == 429 and second.code in ("budget_exceeded", "throttled")


def test_governance_adopts_at_threshold_with_a_logged_record(gnode):
    now = int(time.time() * 1000)
    changes = {"budgets": {"act": {"limit": 6_000_000}}}
    proposal = submit(gnode, AUTH[0], "gov.propose",  # signed at `now`: activate_at is never before its ts
                      {"title": "raise ACT", "changes": changes, "activate_at": now, "expires_at": now + 3_600_000}, ts=now)
    assert proposal.status == 201
    pid = bytes.fromhex(proposal.json()["id"])
    agent = TestAgent()
    register(gnode, agent)
    assert submit(gnode, TestAgent(), "gov.vote", {"proposal": pid, "approve": True}).code == "not_authority"
    assert submit(gnode, AUTH[1], "gov.vote", {"proposal": pid, "approve": True}).status == 201
    assert budget_of(balance(gnode, agent), "agent", "act.cost")["allocated"] == 5_000_000  # 1 of 2
    assert entries_of_kind(gnode, "governance.policy.updated") == 0
    assert submit(gnode, AUTH[2], "gov.vote", {"proposal": pid, "approve": True}).status == 201
    assert entries_of_kind(gnode, "governance.policy.updated") == 1
    assert budget_of(balance(gnode, agent), "agent", "act.cost")["allocated"] == 6_000_000
    # bad proposals and votes change nothing
    bad = submit(gnode, AUTH[0], "gov.propose",
                 {"title": "neg", "changes": {"budgets": {"act": {"limit": -1}}}, "activate_at": now, "expires_at": now + 1000})
    assert bad.status == 422 and bad.code == "invalid_policy"
    missing = submit(gnode, AUTH[1], "gov.vote", {"proposal": os.urandom(32), "approve": True})
    assert missing.status == 404 and missing.code == "proposal_not_found"
    assert entries_of_kind(gnode, "gov.propose") == 1 and entries_of_kind(gnode, "gov.vote") == 2


def test_budget_state_survives_sigkill(gnode):
    agent = TestAgent()
    register(gnode, agent, max_parallel_runs=1)
    assert submit(gnode, agent, "act", act(5_200_000)).status == 201
    run = os.urandom(16)
    assert submit(gnode, agent, "run.reserve", {"run": run, "op": "x", "tokens": 0, "cost": 1, "timeout": 600000}).status == 201
    assert submit(gnode, ORACLE, "stake.set", {"agent": agent.public_key, "amount": 5000}).status == 201
    for _ in range(3):  # a window (the minute's, say) that ends during the restart starts from 0: again
        before = balance(gnode, agent)
        gnode.restart()
        after = balance(gnode, agent)
        if [b["window_start"] for b in before["budgets"]] == [b["window_start"] for b in after["budgets"]]:
            break
    assert before["budgets"] == after["budgets"] and before["runs"] == after["runs"]
    assert after["stake"] == 5000 and after["registered"]


def test_duplicate_receipt_keeps_its_budgets(gnode):
    agent = TestAgent()
    env = agent.envelope("act", act(700))
    first = post_cbor(gnode.url, "/v1/events", env).json()
    again = post_cbor(gnode.url, "/v1/events", env).json()
    assert again["status"] == "duplicate" and again["budgets"] == first["budgets"] and first["budgets"]


def test_alerts_reach_a_webhook_and_a_dead_webhook_never_blocks_admission(tmp_path):
    import asyncio
    import threading

    from aiohttp import web

    received = []
    ready = threading.Event()
    state = {}

    async def hook(request):
        received.append(await request.json())
        return web.Response(status=204)

    def serve():
        loop = asyncio.new_event_loop()
        state["loop"] = loop
        app = web.Application()
        app.router.add_post("/hook", hook)
        runner = web.AppRunner(app)
        loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        loop.run_until_complete(site.start())
        state["port"] = runner.addresses[0][1]
        state["runner"] = runner
        ready.set()
        loop.run_forever()
        loop.run_until_complete(runner.cleanup())
        loop.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    assert ready.wait(10)
    # a second webhook on a closed port: its delivery fails and is retried, the first still arrives
    hooks = f"http://127.0.0.1:{state['port']}/hook,http://127.0.0.1:9/closed"
    env = policy_env(ATS_ALERT_WEBHOOKS=hooks, ATS_ALERT_RETRY_MAX="2")
    try:
        with NodeProcess(str(tmp_path / "n"), env=env) as node:
            agent = TestAgent()
            register(node, agent)
            started = time.monotonic()
            assert submit(node, agent, "act", act(4_100_000)).status == 201
            assert time.monotonic() - started < 2  # the dead webhook does not delay the receipt
            deadline = time.monotonic() + 10
            while not received and time.monotonic() < deadline:
                time.sleep(0.05)
            assert received and received[0]["type"] == "soft_limit"
            assert received[0]["scope_id"] == agent.public_key.hex() and received[0]["node"] == node.origin
            assert received[0]["detail"]["limit"] == 5_000_000
    finally:
        state["loop"].call_soon_threadsafe(state["loop"].stop)
        thread.join(10)


def test_vote_after_expiry_is_refused(tmp_path):
    env = policy_env(ATS_SKEW_MS=str(3_600_000))
    with NodeProcess(str(tmp_path / "n"), env=env) as node:
        now = int(time.time() * 1000)
        body = {"title": "short", "changes": {"prices": {"agent.run": 120}}, "activate_at": now - 600_000,
                "expires_at": now - 300_000}
        proposal = submit(node, AUTH[0], "gov.propose", body, ts=now - 600_000)
        assert proposal.status == 201
        vote = submit(node, AUTH[1], "gov.vote", {"proposal": bytes.fromhex(proposal.json()["id"]), "approve": True})
        assert vote.status == 409 and vote.code == "proposal_expired"
        assert entries_of_kind(node, "gov.vote") == 0


def test_each_event_counts_in_the_utc_window_of_its_own_timestamp(tmp_path):
    env = policy_env(ATS_SKEW_MS=str(2 * 86_400_000))
    with NodeProcess(str(tmp_path / "n"), env=env) as node:
        agent = TestAgent()
        register(node, agent)
        today = int(time.time() * 1000) // 86_400_000 * 86_400_000
        for ts in (today - 1, today, today + 1):  # 23:59:59.999 yesterday, then midnight
            assert submit(node, agent, "act", act(1000), ts=ts).status == 201
        conn = sqlite3.connect(os.path.join(node.data_dir, "ledger.sqlite"))
        rows = dict(conn.execute(
            "SELECT start_ms, amount FROM usage_counters WHERE scope = 'agent' AND metric = 'act.cost' AND window = 'day'"
        ).fetchall())
        conn.close()
        assert rows == {today - 86_400_000: 1000, today: 2000}
        assert budget_of(balance(node, agent), "agent", "act.cost")["consumed"] == 2000


def test_governed_burst_raises_a_limit_for_a_bounded_time(gnode):
    agent = TestAgent()
    register(gnode, agent)
    now = int(time.time() * 1000)
    burst = {"scope": "agent", "scope_id": agent.public_key.hex(), "metric": "act.runs", "factor_pct": 250,
             "start_ms": now, "end_ms": now + 3_600_000}
    proposal = submit(gnode, AUTH[0], "gov.propose", {"title": "launch day", "changes": {"bursts": [burst]},
                                                      "activate_at": now, "expires_at": now + 60_000}, ts=now)
    pid = bytes.fromhex(proposal.json()["id"])
    for voter in AUTH[:2]:
        assert submit(gnode, voter, "gov.vote", {"proposal": pid, "approve": True}).status == 201
    assert budget_of(balance(gnode, agent), "agent", "act.runs")["allocated"] == 50  # 20 × 2.5
    too_long = {**burst, "end_ms": now + 2 * 86_400_000}
    bad = submit(gnode, AUTH[0], "gov.propose", {"title": "forever", "changes": {"bursts": [too_long]},
                                                 "activate_at": now, "expires_at": now + 60_000})
    assert bad.status == 422 and bad.code == "invalid_policy"


def test_budgets_off_records_usage_but_never_refuses(tmp_path):
    with NodeProcess(str(tmp_path / "n"), env=policy_env(ATS_BUDGETS="false")) as node:
        agent = TestAgent()
        for _ in range(3):
            assert submit(node, agent, "act", act(5_000_000)).status == 201
        cost = budget_of(balance(node, agent), "agent", "act.cost")
        assert cost["consumed"] == 15_000_000 and cost["status"] == "critical"


def test_cli_registers_an_agent_and_shows_its_balance(gnode, tmp_path):
    import subprocess
    import sys

    authority_key = str(tmp_path / "authority.key")
    write_key(authority_key, AUTH[0].seed)
    agent = TestAgent()
    body = json.dumps({"agent": agent.public_key.hex(), "user": USER.public_key.hex(), "team": "ops",
                       "platform": "edge", "plan": "premium"})
    cli = [sys.executable, "-m", "node"]
    out = subprocess.run(cli + ["submit", "agent.register", "--key", authority_key, "--body", body, "--url", gnode.url,
                                "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["status"] == "accepted"
    out = subprocess.run(cli + ["balance", agent.public_key.hex(), "--url", gnode.url, "--json"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert doc["registered"] and doc["scopes"][2] == {"scope": "team", "id": "ops", "plan": None}
    assert budget_of(doc, "agent", "act.runs")["allocated"] == 500
