"""The owner's dashboard in headless Chromium, against a real node with real signed events.

Each browser test loads the page from a node process, waits (bounded) for it to
render, and checks that gauges, charts and tables show the numbers the node's API
returns; screenshots go to the test's tmp_path. The browser is Debian's `chromium`
(tests/browser.py drives it over the DevTools protocol): when it is missing the tests
fail and say how to install it; they never skip.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any, Awaitable, Callable

import pytest

from node.api.dashboard import cookie_value, is_loopback, token_rule
from node.config import Config, ConfigError, load
from tests.agentkit import TestAgent
from tests.browser import Browser
from tests.integration.http import get, post_cbor, request
from tests.integration.nodeproc import NodeProcess

AUTHORITY = TestAgent(bytes([21]) * 32)
USER = TestAgent(bytes([22]) * 32)
TOKEN = "s3cret-dashboard-token-0123"
GAUGES_JS = """Array.from(document.querySelectorAll('[data-testid=gauge]')).map(g => ({
  scope: g.dataset.scope, scope_id: g.dataset.scopeId, metric: g.dataset.metric, window: g.dataset.window,
  consumed: Number(g.dataset.consumed), allocated: Number(g.dataset.allocated), status: g.dataset.status,
  colour: g.className, text: g.querySelector('[data-testid=gauge-consumed]').textContent}))"""
SERIES_JS = """id => Array.from(document.querySelectorAll(`#${id} [data-testid=series]`)).map(s => [s.dataset.name, Number(s.dataset.total)])"""


def submit(node: NodeProcess, signer: TestAgent, kind: str, body: dict[str, Any]) -> Any:
    return post_cbor(node.url, "/v1/events", signer.envelope(kind, body))


def act(cost: int, op: str = "llm.call", units: int = 0) -> dict[str, Any]:
    return {"op": op, "cost": cost, "units": units}


def register(node: NodeProcess, agent: TestAgent, team: str) -> None:
    body = {"agent": agent.public_key, "user": USER.public_key, "team": team, "platform": "edge", "plan": "freemium"}
    reply = submit(node, AUTHORITY, "agent.register", body)
    assert reply.status == 201, reply.body


class Fleet:
    """Two teams on one node: ops (one agent past its soft limit, one busy) and research (one suspended)."""

    def __init__(self, node: NodeProcess):
        self.node = node
        self.warned, self.busy, self.suspended = TestAgent(), TestAgent(), TestAgent()
        register(node, self.warned, "ops")
        register(node, self.busy, "ops")
        register(node, self.suspended, "research")
        assert submit(node, self.warned, "act", act(4_100_000, units=900)).status == 201  # 82 %: warning
        for i in range(6):
            assert submit(node, self.busy, "act", act(1_500 + i, op=("llm.call", "tool.browser")[i % 2], units=40)).status == 201
        dat = {"src": bytes(32), "dst": bytes(32), "read": 4096, "written": 1024, "dur": 5}
        assert submit(node, self.busy, "dat", dat).status == 201
        cpt = {"node": "gpu-1", "cpu": 3, "gpu": 1, "mem": 512, "jobs": 1}
        assert submit(node, self.busy, "cpt", cpt).status == 201
        assert submit(node, self.suspended, "act", act(5_200_000, op="agent.plan")).status == 201  # into the reserve
        assert submit(node, self.suspended, "act", act(500_000)).code == "budget_exceeded"  # suspends ACT


def api(node: NodeProcess, path: str) -> Any:
    reply = get(node.url, path)
    assert reply.status == 200, (path, reply.status, reply.body[:300])
    return reply.json()


async def eventually(check: Callable[[], Awaitable[Any]], timeout_s: float = 15, what: str = "") -> Any:
    """Retry an async check until it returns without AssertionError; bounded in time."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return await check()
        except AssertionError:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.25)


@pytest.fixture
def policy_node(tmp_path):
    env = {"ATS_AUTHORITIES": AUTHORITY.public_key.hex()}
    proc = NodeProcess(str(tmp_path / "node"), env=env).start()
    try:
        yield proc
    finally:
        proc.kill()


@pytest.fixture
async def browser():
    b = Browser()
    try:
        await b.start()
        yield b
    finally:
        await b.close()


async def open_dashboard(browser: Browser, node: NodeProcess, query: str = "") -> None:
    await browser.goto(f"{node.url}/?refresh=1{query}")
    await browser.wait_for("document.body.dataset.state === 'ok'", 20, what="the dashboard's first refresh")


def limited_day_budgets(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Limited budgets whose windows do not roll over during a test (minute and hour windows may)."""
    return sorted(
        ({k: b[k] for k in ("scope", "scope_id", "metric", "window", "consumed", "allocated", "status")}
         for b in doc["budgets"] if b["allocated"] is not None and b["window"] in ("day", "week")),
        key=lambda b: (b["scope"], b["scope_id"], b["metric"], b["window"]),
    )


async def gauges(browser: Browser) -> list[dict[str, Any]]:
    return await browser.eval(GAUGES_JS)


async def series(browser: Browser, chart: str) -> dict[str, int]:
    return dict(await browser.eval(f"({SERIES_JS})('{chart}')"))


async def test_gauges_charts_and_tables_show_what_the_api_returns(policy_node, browser, tmp_path):
    node = policy_node
    fleet = Fleet(node)
    await open_dashboard(browser, node, "&team=ops")
    assert await browser.eval("document.getElementById('team').value") == "ops"
    assert await browser.eval("Array.from(document.getElementById('team').options).map(o => o.value)") == ["", "ops", "research"]

    async def gauges_match() -> list[dict[str, Any]]:
        shown = await gauges(browser)
        doc = api(node, "/v1/dashboard/budgets?team=ops")
        expected = limited_day_budgets(doc)
        assert expected, "the ops team has limited daily budgets"
        seen = sorted(({k: g[k] for k in expected[0]} for g in shown if g["window"] in ("day", "week")),
                      key=lambda b: (b["scope"], b["scope_id"], b["metric"], b["window"]))
        assert seen == expected
        return shown

    shown = await eventually(gauges_match, what="gauges equal to GET /v1/dashboard/budgets")
    # and the gauge of the agent past its soft limit agrees with the agent's own balance
    balance = api(node, f"/v1/agents/{fleet.warned.public_key.hex()}/balance")
    cost = next(b for b in balance["budgets"] if b["scope"] == "agent" and b["metric"] == "act.cost")
    gauge = next(g for g in shown if g["scope_id"] == fleet.warned.public_key.hex() and g["metric"] == "act.cost")
    assert (gauge["consumed"], gauge["allocated"], gauge["status"]) == (cost["consumed"], cost["allocated"], "warning")
    assert "warning" in gauge["colour"].split() and gauge["text"] == "4,100.000 T"
    assert await browser.eval("document.querySelectorAll('[data-testid=gauge].warning [data-mark=soft]').length") >= 1
    # the team is never given the research agent's budgets
    assert all(g["scope_id"] != fleet.suspended.public_key.hex() for g in shown)

    report = api(node, "/v1/reports/team/ops?period=day")

    async def report_matches() -> None:
        assert await browser.eval("Number(document.querySelector('[data-testid=total-cost]').dataset.value)") == report["cost_mT"]
        for kind in ("ACT", "DAT", "CPT", "TRT"):
            events = report["totals"].get(kind, {}).get("events", 0)
            assert await browser.eval(f"Number(document.querySelector('[data-testid=total-{kind}]').dataset.value)") == events
        per_kind = {k: sum(p.get(k, 0) for p in report["series"]["points"]) for k in ("ACT", "DAT", "CPT", "TRT")}
        assert await series(browser, "chart-kind") == per_kind
        top = await browser.eval("Array.from(document.querySelectorAll('[data-testid=top-agent]')).map(r => [r.dataset.key, Number(r.dataset.cost)])")
        assert top == [[a["agent"], a["cost_mT"]] for a in report["by_agent"][:10]]
        ops = await browser.eval("Array.from(document.querySelectorAll('[data-testid=top-op]')).map(r => [r.dataset.key, Number(r.dataset.cost)])")
        assert ops == [[o["op"], o["cost_mT"]] for o in report["by_operation"][:10]]
        per_agent = {a["agent"]: sum(p["cost_mT"] for p in api(node, f"/v1/reports/agent/{a['agent']}?period=day")["series"]["points"])
                     for a in report["by_agent"][:5]}
        assert await series(browser, "chart-agent") == per_agent
        per_team = {t: sum(p["cost_mT"] for p in api(node, f"/v1/reports/team/{t}?period=day")["series"]["points"])
                    for t in ("ops", "research")}
        assert await series(browser, "chart-team") == per_team

    await eventually(report_matches, what="totals, charts and tables equal to GET /v1/reports/team/ops")
    # replication panel: this node's checkpoint, as GET /v1/log/checkpoint serves it
    note = get(node.url, "/v1/log/checkpoint").body.decode().split("\n")
    await browser.wait_for(f"document.getElementById('cp-root').textContent === {json.dumps(note[2])}", 10)
    assert int(await browser.eval("document.getElementById('cp-size').textContent")) == int(note[1])
    assert await browser.eval("document.querySelector('[data-testid=peers-empty]').hidden") is False
    await browser.screenshot(str(tmp_path / "dashboard-ops.png"))
    assert browser.console_errors == []


async def test_team_selector_shows_the_other_teams_suspension_and_alerts(policy_node, browser, tmp_path):
    node = policy_node
    fleet = Fleet(node)
    await open_dashboard(browser, node)
    await browser.eval("(() => { const s = document.getElementById('team'); s.value = 'research';"
                       " s.dispatchEvent(new Event('change')); })()")
    agent = fleet.suspended.public_key.hex()
    await browser.wait_for("document.getElementById('gauges').dataset.team === 'research'", 10, what="the research view")
    assert await browser.eval(f"!!document.querySelector('[data-testid=suspension][data-agent=\"{agent}\"]')")
    assert await browser.eval("location.search") == "?refresh=1&team=research"
    doc = api(node, "/v1/dashboard/budgets?team=research")
    assert [s["agent"] for s in doc["suspensions"]] == [agent]
    shown_alerts = await browser.eval("Array.from(document.querySelectorAll('[data-testid=alert]')).map(a => a.dataset.type)")
    assert shown_alerts == [a["type"] for a in doc["alerts"]] and "hard_limit" in shown_alerts
    critical = [g for g in await gauges(browser) if g["scope_id"] == agent and g["metric"] == "act.cost"]
    assert critical and critical[0]["status"] == "critical" and "critical" in critical[0]["colour"].split()
    await browser.screenshot(str(tmp_path / "dashboard-research.png"))
    assert browser.console_errors == []


async def test_numbers_update_live_and_a_banner_says_when_the_node_is_gone(policy_node, browser, tmp_path):
    node = policy_node
    fleet = Fleet(node)
    await open_dashboard(browser, node, "&team=ops")
    key = fleet.busy.public_key.hex()
    shown = "document.querySelector('[data-testid=gauge][data-scope-id=\"%s\"][data-metric=\"act.cost\"]').dataset.consumed" % key
    before = int(await browser.wait_for(shown, 10))
    assert before == sum(1_500 + i for i in range(6))
    for _ in range(3):
        assert submit(node, fleet.busy, "act", act(10_000)).status == 201
    after = api(node, f"/v1/agents/{key}/balance")
    expected = next(b for b in after["budgets"] if b["scope"] == "agent" and b["metric"] == "act.cost")["consumed"]
    assert expected == before + 30_000
    await browser.wait_for(f"Number({shown}) === {expected}", 10, what="the gauge to show the new events")
    assert "s ago" in await browser.eval("document.getElementById('updated').textContent")
    assert await browser.eval("document.getElementById('offline').hidden") is True
    node.kill()
    await browser.wait_for("!document.getElementById('offline').hidden && document.body.dataset.state === 'offline'", 15,
                           what="the unreachable banner")
    assert "Cannot reach this node" in await browser.eval("document.getElementById('offline').textContent")
    # the last figures stay on screen under the banner
    assert int(await browser.eval(shown)) == expected
    await browser.screenshot(str(tmp_path / "dashboard-offline.png"))


def test_token_rule_is_open_on_loopback_only_unless_told_otherwise():
    assert is_loopback("127.0.0.1") and is_loopback("127.0.0.2") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.1.2.3") and not is_loopback("node.example")
    assert token_rule(Config(listen_host="127.0.0.1")) == "open"
    assert token_rule(Config(listen_host="127.0.0.1", dashboard_token=TOKEN)) == "open"
    assert token_rule(Config(listen_host="10.1.2.3")) == "unset"
    assert token_rule(Config(listen_host="0.0.0.0", dashboard_token=TOKEN)) == "token"
    assert token_rule(Config(listen_host="127.0.0.1", dashboard_auth="token")) == "unset"
    assert token_rule(Config(listen_host="127.0.0.1", dashboard_auth="token", dashboard_token=TOKEN)) == "token"
    with pytest.raises(ConfigError) as bad:
        load(env={"ATS_DASHBOARD_AUTH": "none", "ATS_DASHBOARD_TOKEN": "short"})
    assert bad.value.problems == ["dashboard_auth must be auto or token",
                                  "dashboard_token must be at least 16 printable characters without spaces"]
    assert load(env={"ATS_DASHBOARD_TOKEN": TOKEN}).dashboard_token == TOKEN


def test_page_and_assets_are_served_with_their_types_and_cache_headers(node):
    page = get(node.url, "/")
    assert page.status == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.headers["cache-control"] == "no-cache" and "default-src 'self'" in page.headers["content-security-policy"]
    assert b"/static/dashboard.js" in page.body and b"http" not in page.body.replace(b"http-equiv", b"")
    for name, ctype in (("dashboard.js", "text/javascript"), ("dashboard.css", "text/css")):
        asset = get(node.url, f"/static/{name}")
        assert asset.status == 200 and asset.headers["content-type"] == f"{ctype}; charset=utf-8"
        # nothing from another origin: the only absolute URL is SVG's namespace name
        assert set(re.findall(rb"https?://[^\s\"'`]+", asset.body)) <= {b"http://www.w3.org/2000/svg"}
        again = request(node.url, "GET", f"/static/{name}", headers={"If-None-Match": asset.headers["etag"]})
        assert again.status == 304 and again.body == b""
    missing = get(node.url, "/static/../openapi.json")
    assert missing.status == 404 and missing.code == "not_found"
    assert get(node.url, "/static/app.js").code == "not_found"


def test_dashboard_without_a_token_off_loopback_answers_403_and_leaves_the_api_open(tmp_path):
    # dashboard_auth=token treats this loopback node as one that listens elsewhere (no namespace needed)
    with NodeProcess(str(tmp_path / "n"), env={"ATS_DASHBOARD_AUTH": "token"}) as node:
        for path in ("/", "/static/dashboard.js", "/v1/dashboard/agents", "/v1/dashboard/budgets"):
            reply = get(node.url, path)
            assert reply.status == 403 and reply.code == "dashboard_token_unset", path
            assert "dashboard_token" in reply.json()["error"]["message"]
        page = request(node.url, "GET", "/", headers={"Accept": "text/html"})
        assert page.status == 403 and b"dashboard_token_unset" in page.body
        # the agent and auditor API is not the dashboard's to guard
        assert get(node.url, "/v1/node").status == 200
        assert get(node.url, "/v1/log/checkpoint").status == 200


async def test_token_opens_the_dashboard_once_then_a_cookie_keeps_it(tmp_path, browser):
    env = {"ATS_DASHBOARD_AUTH": "token", "ATS_DASHBOARD_TOKEN": TOKEN}
    with NodeProcess(str(tmp_path / "n"), env=env) as node:
        for path in ("/", "/v1/dashboard/agents"):
            assert get(node.url, path).code == "token_required"
            wrong = request(node.url, "GET", path, headers={"Authorization": "Bearer " + TOKEN[:-1] + "x"})
            assert wrong.status == 401 and wrong.code == "token_required"
            assert request(node.url, "GET", path, headers={"Authorization": f"Bearer {TOKEN}"}).status == 200
        assert get(node.url, f"/v1/dashboard/budgets?token={TOKEN}").status == 200
        first = get(node.url, f"/?team=ops&token={TOKEN}")
        assert first.status == 303 and first.headers["location"] == "/?team=ops"
        cookie = first.headers["set-cookie"]
        assert f"ats_dashboard={cookie_value(TOKEN)}" in cookie and "HttpOnly" in cookie and "SameSite=Strict" in cookie
        assert TOKEN not in cookie
        with_cookie = request(node.url, "GET", "/v1/dashboard/agents", headers={"Cookie": f"ats_dashboard={cookie_value(TOKEN)}"})
        assert with_cookie.status == 200
        assert get(node.url, "/v1/node").status == 200  # the public API needs no token
        # in the browser: the refusal page, then ?token= once, and the page's own API calls carry the cookie
        await browser.goto(f"{node.url}/")
        assert await browser.eval("document.querySelector('[data-testid=refusal-code]').textContent") == "token_required"
        await browser.screenshot(str(tmp_path / "dashboard-token-required.png"))
        await browser.goto(f"{node.url}/?token={TOKEN}&refresh=1")
        await browser.wait_for("document.body.dataset.state === 'ok'", 20, what="the dashboard behind its token")
        assert await browser.eval("location.search") == "?refresh=1"
        assert "No agents yet" in await browser.eval("document.getElementById('gauges-empty').textContent")


async def test_replication_panel_shows_peers_witnesses_and_the_anchored_checkpoint(tmp_path, browser):
    open_cluster = {"ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "200", "ATS_DISCOVERY": "off"}
    a = NodeProcess(str(tmp_path / "a"), host="127.0.0.2", env=open_cluster)
    b = NodeProcess(str(tmp_path / "b"), host="127.0.0.3", env=open_cluster)
    try:
        a.start()
        b.env["ATS_PEERS"] = a.url
        b.start()
        for _ in range(3):
            assert post_cbor(a.url, "/v1/events", TestAgent().envelope()).status == 201

        async def cosigned() -> str:
            note = get(a.url, "/v1/log/checkpoint").body.decode()
            assert f"— ats-ledger/{b.origin} " in note and get(a.url, "/v1/log/checkpoint/anchored").status == 200
            assert [p["node"] for p in api(a, "/v1/peers")["peers"]] == [b.origin]
            return note

        note = await eventually(cosigned, 30, what="b to cosign a's checkpoint")
        await open_dashboard(browser, a)
        witness = f"ats-ledger/{b.origin}"
        await browser.wait_for(f"!!document.querySelector('[data-testid=cp-witness][data-name=\"{witness}\"]')", 10,
                               what="b's cosignature in the checkpoint panel")
        assert await browser.eval("document.querySelectorAll('[data-testid=cp-signer]').length") == 1

        async def panel_matches() -> None:
            peers = api(a, "/v1/peers")["peers"]
            shown = await browser.eval("Array.from(document.querySelectorAll('[data-testid=peer]')).map(r =>"
                                       " [r.dataset.url, r.dataset.state, Number(r.querySelector('[data-testid=behind-events]').textContent)])")
            assert shown == [[p["url"], p["state"], p["behind_events"]] for p in peers]
            anchored = get(a.url, "/v1/log/checkpoint/anchored").body.decode().split("\n")[1]
            assert await browser.eval("document.getElementById('cp-anchored').dataset.size") == anchored
            latest = get(a.url, "/v1/log/checkpoint").body.decode().split("\n")
            assert await browser.eval("document.getElementById('cp-size').textContent") == latest[1]

        await eventually(panel_matches, 15, what="the peers and checkpoint panels equal the API")
        assert note.split("\n")[0] == f"ats-ledger/{a.origin}"
        await browser.screenshot(str(tmp_path / "dashboard-replication.png"))
        assert browser.console_errors == []
    finally:
        a.kill()
        b.kill()
