"""Alert webhooks people see: signed (ATS-Signature), a readable line, a Slack-compatible target;
a real local aiohttp receiver, a real node process."""

import asyncio
import json
import threading
import time

import pytest
from aiohttp import web

from ledger import webhooks
from tests.agentkit import TestAgent
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_budgets import AUTH, USER, act, policy_env, submit

pytestmark = pytest.mark.integration

SECRET = "whsec_test_0123"


class Receiver:
    """An aiohttp server on 127.0.0.1 in a thread: keeps (path, headers, raw body) of every POST."""

    def __init__(self):
        self.got: list[tuple[str, dict, bytes]] = []
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    async def _hook(self, request):
        self.got.append((request.path, dict(request.headers), await request.read()))
        return web.Response(status=204 if request.path != "/slack" else 200, text=None if request.path != "/slack" else "ok")

    def _serve(self):
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_post("/{name}", self._hook)
        runner = web.AppRunner(app)
        self.loop.run_until_complete(runner.setup())
        site = web.TCPSite(runner, "127.0.0.1", 0)
        self.loop.run_until_complete(site.start())
        self.port = runner.addresses[0][1]
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(runner.cleanup())
        self.loop.close()

    def __enter__(self):
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)

    def wait_for(self, path, count, timeout_s=10):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            got = [g for g in self.got if g[0] == path]
            if len(got) >= count:
                return got
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len([g for g in self.got if g[0] == path])} of {count} posts")


def test_signed_alerts_with_a_text_line_and_a_slack_target_for_every_crossing(tmp_path):
    with Receiver() as rx:
        base = f"http://127.0.0.1:{rx.port}"
        hooks = f"{base}/signed#secret={SECRET},slack+{base}/slack"
        env = policy_env(ATS_ALERT_WEBHOOKS=hooks)
        with NodeProcess(str(tmp_path / "n"), env=env) as node:
            agent = TestAgent()
            body = {"agent": agent.public_key, "user": USER.public_key, "team": "ops", "platform": "edge",
                    "plan": "premium", "name": "alice"}
            assert submit(node, AUTH[0], "agent.register", body).status == 201
            budget = {"scope": "team", "id": "ops", "metric": "cost", "window": "month", "limit": 1000,
                      "reserve_pct": 10}
            assert submit(node, AUTH[0], "budget.set", budget).status == 201
            assert submit(node, agent, "act", act(750)).status == 201  # 75 %: nothing yet
            # one event from 75 % into the reserve: soft, hard and reserve, each its own alert
            assert submit(node, agent, "act", act(300)).status == 201
            signed = rx.wait_for("/signed", 3)
            slack = rx.wait_for("/slack", 3)
    now = int(time.time())
    types = set()
    for _path, headers, raw in signed:
        header = headers[webhooks.SIGNATURE_HEADER]
        assert header.startswith("t=") and ",v1=" in header
        assert webhooks.verify(SECRET.encode(), header, raw, now)
        assert not webhooks.verify(b"another secret", header, raw, now)
        assert not webhooks.verify(SECRET.encode(), header, raw + b" ", now)  # a changed body
        assert not webhooks.verify(SECRET.encode(), header, raw, now + 3600)  # a replay an hour later
        doc = json.loads(raw)
        assert doc["scope"] == "team" and doc["scope_id"] == "ops" and doc["text"].startswith("ATS ")
        types.add(doc["type"])
    assert types == {"soft_limit", "hard_limit", "reserve"}
    lines = sorted(json.loads(raw)["text"] for _p, _h, raw in slack)
    for _path, headers, raw in slack:
        assert set(json.loads(raw)) == {"text"}  # Slack's incoming-webhook shape
        assert webhooks.SIGNATURE_HEADER not in headers  # no secret given: unsigned
    assert any(line.startswith("ATS soft limit crossed: team ops, act.cost at 1.05 T of 1 T (105 %)") for line in lines), lines


def test_webhook_targets_parse_and_refuse_bad_entries():
    t = webhooks.parse_target("https://x.example/h#secret=abc")
    assert (t.url, t.secret, t.slack, t.shown) == ("https://x.example/h", b"abc", False, "https://x.example/h")
    assert webhooks.parse_target("slack+https://hooks.slack.com/services/T/B/X").slack
    for bad in ("ftp://x", "slack+ftp://x", "https://x#token=1", "https://x#secret="):
        with pytest.raises(ValueError):
            webhooks.parse_target(bad)
    # the header format of Stripe's: t=<s>,v1=<hex hmac_sha256(secret, "t.body")>
    import hashlib
    import hmac
    assert webhooks.sign(b"k", 1700000000, b"{}") == "t=1700000000,v1=" + hmac.new(
        b"k", b"1700000000.{}", hashlib.sha256).hexdigest()
