"""Owner budgets per scope (budget.set / budget.rm, ledger/scoped.py) on real node processes."""

import os
import subprocess
import sys
import time

import pytest

from ledger import encoding
from ledger.events import PROTOCOL_VERSION, make_envelope_bytes
from ledger.signing import sign
from node.keys import write_key
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_budgets import AUTH, USER, act, entries_of_kind, policy_env, submit

pytestmark = pytest.mark.integration

ADMIN = TestAgent(bytes([20]) * 32)  # team_admins: ops=ADMIN
CLI_TIMEOUT_S = 30


@pytest.fixture
def onode(tmp_path):
    env = policy_env(ATS_TEAM_ADMINS=f"ops={ADMIN.public_key.hex()}")
    proc = NodeProcess(str(tmp_path / "node"), env=env).start()
    try:
        yield proc
    finally:
        proc.kill()


def register(node, agent, team="ops"):
    body = {"agent": agent.public_key, "user": USER.public_key, "team": team, "platform": "edge", "plan": "premium"}
    assert submit(node, AUTH[0], "agent.register", body).status == 201


def budgets(node, query=""):
    reply = get(node.url, f"/v1/budgets{query}")
    assert reply.status == 200, reply.body
    return reply.json()["budgets"]


def now_ms():
    return int(time.time() * 1000)


def submit_unchecked(node, signer, kind, body):
    """Sign a body the client-side schema check would refuse: the node must refuse it itself."""
    raw = encoding.encode({"v": PROTOCOL_VERSION, "kind": kind, "signer": signer.public_key, "ts": now_ms(),
                           "nonce": os.urandom(16), "body": body})
    return post_cbor(node.url, "/v1/events", make_envelope_bytes(raw, sign(raw, signer.seed)))


def ats(*args):
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True,
                          timeout=CLI_TIMEOUT_S, env={**os.environ, "ATS_URL": "http://127.0.0.1:9"})


def test_a_team_budget_limits_its_agents_together_and_a_change_keeps_what_was_spent(onode):
    a, b = TestAgent(), TestAgent()
    register(onode, a)
    register(onode, b)
    set_body = {"scope": "team", "id": "ops", "metric": "cost", "window": "month", "limit": 5000}
    assert submit(onode, AUTH[0], "budget.set", set_body).status == 201
    assert submit(onode, a, "act", act(3000)).status == 201
    assert submit(onode, b, "act", act(2000)).status == 201
    over = submit(onode, a, "act", act(1))
    assert over.status == 429 and over.code == "budget_exceeded" and "team" in over.json()["error"]["message"]
    assert int(over.headers["retry-after"]) > 3600  # until the month ends (at least an hour away)
    [item] = budgets(onode, "?scope=team&id=ops")
    assert (item["metric"], item["window"], item["consumed"], item["remaining"]) == ("act.cost", "month", 5000, 0)
    # raising the limit counts the same consumption once: 5000 of 6000 used, 1000 left
    time.sleep(0.01)
    assert submit(onode, AUTH[1], "budget.set", {**set_body, "limit": 6000}).status == 201
    assert submit(onode, a, "act", act(1000)).status == 201
    assert submit(onode, b, "act", act(1)).code == "budget_exceeded"
    # lowering it below what was spent refuses everything, and spends nothing twice
    time.sleep(0.01)
    assert submit(onode, AUTH[0], "budget.set", {**set_body, "limit": 4000}).status == 201
    [item] = budgets(onode, "?scope=team&id=ops")
    assert (item["consumed"], item["in_force"]["limit"], item["remaining"]) == (6000, 4000, 0)
    # an agent of another team is not limited by ops's budget
    other = TestAgent()
    register(onode, other, team="research")
    assert submit(onode, other, "act", act(9000)).status == 201
    # removed: the plan's defaults apply again (premium: 5000 T a day per agent)
    time.sleep(0.01)
    rm = {k: set_body[k] for k in ("scope", "id", "metric", "window")}
    assert submit(onode, AUTH[0], "budget.rm", rm).status == 201
    assert submit(onode, a, "act", act(1)).status == 201
    assert budgets(onode, "?scope=team&id=ops") == []
    # the budget survives a restart: the log is folded again
    assert submit(onode, AUTH[0], "budget.set", {**set_body, "limit": 7001}).status == 201
    onode.restart()
    [item] = budgets(onode, "?scope=team&id=ops")
    # while no budget asked for the month counter, it did not count (the 1 spent after budget.rm)
    assert (item["in_force"]["limit"], item["consumed"]) == (7001, 6000)
    assert submit(onode, b, "act", act(1001)).status == 201
    assert submit(onode, b, "act", act(1)).code == "budget_exceeded"


def later_today_ms(ahead_ms: int = 3_600_000, margin_ms: int = 120_000) -> int:
    """An instant up to ahead_ms from now but still in this UTC day, so that a day's counter read at
    it is today's; in the day's last margin_ms, the next day is waited for (at most ~2 min)."""
    day = 86_400_000
    now = now_ms()
    if day - now % day < margin_ms:
        time.sleep((day - now % day) / 1000 + 1)
        now = now_ms()
    return min(now + ahead_ms, now - now % day + day - 1)


def test_an_agent_budget_overrides_the_plan_default_and_starts_when_it_says(onode):
    agent = TestAgent()
    register(onode, agent)
    later = later_today_ms()  # in the last hour of a UTC day, an hour ahead is tomorrow: 0 runs counted yet
    body = {"scope": "agent", "id": agent.public_key.hex(), "metric": "runs", "window": "day", "limit": 2,
            "effective": later}
    assert submit(onode, AUTH[0], "budget.set", body).status == 201
    [item] = budgets(onode, f"?scope=agent&id={agent.public_key.hex()}")
    assert item["in_force"] is None and item["scheduled"][0]["limit"] == 2
    for _ in range(3):  # not in force yet: premium allows 500 runs a day
        assert submit(onode, agent, "act", act(1, op="agent.run")).status == 201
    [item] = budgets(onode, f"?scope=agent&id={agent.public_key.hex()}&at={later}")
    assert item["in_force"]["limit"] == 2 and item["consumed"] == 3  # the day's runs count from the default's counter
    now_body = {**body, "effective": now_ms(), "limit": 4}
    assert submit(onode, AUTH[0], "budget.set", now_body).status == 201
    assert submit(onode, agent, "act", act(1, op="agent.run")).status == 201
    refused = submit(onode, agent, "act", act(1, op="agent.run"))
    assert refused.code == "budget_exceeded" and "limit 4 per day" in refused.json()["error"]["message"]


def test_bad_budget_records_each_get_their_code_and_nothing_is_applied(onode):
    agent = TestAgent()
    register(onode, agent)
    good = {"scope": "team", "id": "ops", "metric": "cost", "window": "month", "limit": 5000}
    cases = [
        (AUTH[0], {**good, "scope": "galaxy"}, 422, "invalid_scope"),
        (AUTH[0], {**good, "metric": "karma"}, 422, "unknown_metric"),
        (AUTH[0], {**good, "window": "year"}, 422, "unknown_window"),
        (AUTH[0], {**good, "tz": "Mars/Olympus"}, 422, "unknown_window"),
        (AUTH[0], {**good, "window": "hour", "tz": "Europe/Paris"}, 422, "unknown_window"),
        (AUTH[0], {**good, "limit": -1}, 422, "invalid_limit"),
        (AUTH[0], {**good, "limit": 2**63}, 422, "invalid_limit"),
        (AUTH[0], {**good, "limit": 2**62, "reserve_pct": 100}, 422, "invalid_limit"),
        (AUTH[0], {**good, "limit": 2**62}, 422, "invalid_limit"),  # past the largest usage counter
        (AUTH[0], {**good, "limit": 2**61, "reserve_pct": 100}, 422, "invalid_limit"),  # hard + reserve past it
        (AUTH[0], {**good, "effective": 2**47}, 422, "amount_out_of_range"),  # after the last instant
        (AUTH[0], {**good, "soft_pct": 90, "hard_pct": 80}, 422, "invalid_policy"),
        (AUTH[0], {**good, "effective": now_ms() - 600_000}, 422, "effective_in_past"),
        (AUTH[0], {**good, "scope": "agent", "id": "ops"}, 422, "invalid_body"),
        (TestAgent(), good, 403, "not_authority"),
        (ADMIN, {**good, "id": "research"}, 403, "not_authority"),  # an admin of ops only
        (AUTH[0], {k: good[k] for k in ("scope", "id", "metric", "window")}, 422, "budget_not_found"),
    ]
    for signer, body, status, code in cases:
        kind = "budget.rm" if "limit" not in body else "budget.set"
        reply = submit_unchecked(onode, signer, kind, body)
        assert (reply.status, reply.code) == (status, code), (body, reply.body)
    assert entries_of_kind(onode, "budget.set") == entries_of_kind(onode, "budget.rm") == 0
    assert budgets(onode) == []
    # a team admin sets its own team's budget; a second change at the same instant collides
    at = now_ms() + 60_000
    assert submit(onode, ADMIN, "budget.set", {**good, "effective": at}).status == 201
    clash = submit(onode, AUTH[0], "budget.set", {**good, "limit": 1, "effective": at})
    assert (clash.status, clash.code) == (409, "budget_exists")
    assert entries_of_kind(onode, "budget.set") == 1


def test_cli_sets_gets_lists_and_removes_a_budget(onode, tmp_path):
    key = str(tmp_path / "authority.key")
    write_key(key, AUTH[0].seed)
    url = ["--url", onode.url]
    out = ats("budget", "set", "team", "ops", "--metric", "cost", "--limit", "200T", "--window", "month",
              "--tz", "Europe/Paris", "--key", key, *url)
    assert out.returncode == 0, out.stderr
    assert "budget.set team ops cost per month: recorded as" in out.stdout
    out = ats("budget", "get", "team", "ops", *url)
    assert out.returncode == 0 and "team ops  act.cost per month@Europe/Paris: 0 T used of 200 T" in out.stdout, out.stdout
    out = ats("budget", "list", "--json", *url)
    assert out.returncode == 0 and '"limit": 200000' in out.stdout
    out = ats("budget", "set", "team", "ops", "--metric", "karma", "--limit", "1", "--key", key, *url)
    assert out.returncode == 2 and "--metric" in out.stderr
    out = ats("budget", "set", "team", "ops", "--limit", "1", "--window", "month", "--tz", "Nowhere/Land", "--key", key, *url)
    assert out.returncode == 1 and "unknown_window" in out.stderr
    out = ats("budget", "rm", "team", "ops", "--tz", "Europe/Paris", "--key", key, *url)
    assert out.returncode == 0, out.stderr
    out = ats("budget", "list", *url)
    assert out.returncode == 0 and "no owner budgets" in out.stdout


def test_a_budget_set_on_one_node_is_enforced_by_its_peer(tmp_path):
    env = {**policy_env(), "ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "200"}
    a = NodeProcess(str(tmp_path / "a"), host="127.0.0.2", env=env).start()
    try:
        b = NodeProcess(str(tmp_path / "b"), host="127.0.0.3", env={**env, "ATS_PEERS": a.url}).start()
        try:
            agent = TestAgent()
            register(a, agent)
            body = {"scope": "agent", "id": agent.public_key.hex(), "metric": "cost", "window": "week", "limit": 700}
            assert submit(a, AUTH[0], "budget.set", body).status == 201
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not budgets(b):
                time.sleep(0.2)
            [item] = budgets(b)
            assert item["in_force"]["limit"] == 700
            assert submit(b, agent, "act", act(700)).status == 201
            refused = submit(b, agent, "act", act(1))
            assert refused.code == "budget_exceeded" and "act.cost limit 700 per week" in refused.json()["error"]["message"]
        finally:
            b.kill()
    finally:
        a.kill()


def test_names_from_registration_work_wherever_an_identity_is_taken(onode, tmp_path):
    alice, bob = TestAgent(), TestAgent()
    body = {"agent": alice.public_key, "user": USER.public_key, "team": "ops", "platform": "edge", "plan": "freemium",
            "name": "alice", "user_name": "carol"}
    assert submit(onode, AUTH[0], "agent.register", body).status == 201
    # a name already taken (by an agent or a user) is refused, and nothing of the record applies
    clash_body = {k: v for k, v in body.items() if k != "user_name"}
    clash = submit(onode, AUTH[0], "agent.register", {**clash_body, "agent": bob.public_key, "name": "carol"})
    assert (clash.status, clash.code) == (409, "name_taken")
    assert get(onode.url, f"/v1/agents/{bob.public_key.hex()}/balance").json()["registered"] is False
    bad = submit_unchecked(onode, AUTH[0], "agent.register", {**body, "agent": bob.public_key, "name": "ab" * 32})
    assert bad.code == "invalid_body"
    # the API takes a name where it takes an agent
    bal = get(onode.url, "/v1/agents/alice/balance").json()
    assert (bal["agent"], bal["name"], bal["scopes"][1]["name"]) == (alice.public_key.hex(), "alice", "carol")
    assert get(onode.url, "/v1/agents/nobody/balance").code == "unknown_name"
    assert get(onode.url, "/v1/names/carol").json() == {"name": "carol", "key": USER.public_key.hex(), "scope": "user"}
    assert get(onode.url, "/v1/reports/agent/alice").json()["id"] == alice.public_key.hex()
    out = ats("report", "agent", "alice", "--url", onode.url)
    assert out.returncode == 0 and f"agent {alice.public_key.hex()}: day from " in out.stdout and " UTC to " in out.stdout
    # the CLI takes a name, a hex key or a key file, and prints names and human times
    key = str(tmp_path / "alice.key")
    write_key(key, alice.seed)
    for who in ("alice", alice.public_key.hex(), key):
        out = ats("balance", who, "--url", onode.url)
        assert out.returncode == 0 and out.stdout.startswith(f"agent alice  ({alice.public_key.hex()})"), out.stderr
        assert "carol (" in out.stdout and " UTC" in out.stdout
    out = ats("budget", "set", "agent", "alice", "--metric", "runs", "--limit", "1", "--window", "day",
              "--key", str(_authority_key(tmp_path)), "--url", onode.url)
    assert out.returncode == 0, out.stderr
    # `ats submit` prints the id; a refusal prints its reason and Retry-After
    out = ats("submit", "act", "--key", key, "--url", onode.url, "--body", '{"op": "agent.run", "cost": 1}')
    assert out.returncode == 0 and len(out.stdout.strip()) == 64, out.stderr
    out = ats("submit", "act", "--key", key, "--url", onode.url, "--body", '{"op": "agent.run", "cost": 1}')
    assert out.returncode == 1 and out.stderr.startswith("ats: budget_exceeded: ") and "Retry-After: " in out.stderr
    out = ats("balance", "nobody", "--url", onode.url)
    assert out.returncode == 1 and "unknown_name" in out.stderr


def _authority_key(tmp_path):
    path = tmp_path / "authority.key"
    if not path.exists():
        write_key(str(path), AUTH[0].seed)
    return path


def test_strict_mode_tells_ask_again_soon_from_spent_until_the_window_ends(tmp_path):
    """Issue 12: a cluster-wide exhausted strict budget answered 429 no_rights, Retry-After: 1."""
    from tests.integration.test_strict import CAPACITY, KEYS, RUN, SEEDS, strict_env

    data = str(tmp_path / "n0")
    write_key(os.path.join(data, "node.key"), SEEDS[0])
    # one member holds every right: when it has none left, nobody has
    node = NodeProcess(data, env=strict_env(ATS_STRICT_MEMBERS=KEYS[0])).start()
    try:
        agent = TestAgent()
        for _ in range(CAPACITY):
            assert submit(node, agent, "act", RUN).status == 201
        refused = submit(node, agent, "act", RUN)
        assert (refused.status, refused.code, refused.headers["x-should-retry"]) == (429, "budget_exceeded", "false")
        day_ms = 86_400_000
        assert abs(int(refused.headers["retry-after"]) - (day_ms - now_ms() % day_ms) / 1000) <= 2
    finally:
        node.kill()
