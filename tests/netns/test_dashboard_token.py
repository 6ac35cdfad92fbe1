"""The dashboard's token rule on a node that really listens off loopback (10.213.0.2, in a namespace)."""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.netns

TOKEN = "netns-dashboard-token-0123"


def test_off_loopback_the_dashboard_needs_a_configured_token_and_the_api_stays_open(cluster):
    c = cluster(1)  # one node on 10.213.0.2:8470, dashboard_auth auto, no token
    for path in ("/", "/v1/dashboard/budgets"):
        status, _, body = c.request(0, "GET", path)
        error = json.loads(body)["error"]
        assert status == 403 and error["code"] == "dashboard_token_unset", body
        assert "10.213.0.2, which is not a loopback address" in error["message"] and "dashboard_token" in error["message"]
    status, _, _ = c.request(0, "GET", "/v1/node")
    assert status == 200
    c.restart(0, env={"ATS_DASHBOARD_TOKEN": TOKEN})
    status, _, body = c.request(0, "GET", "/v1/dashboard/agents")
    assert status == 401 and json.loads(body)["error"]["code"] == "token_required"
    status, _, body = c.request(0, "GET", "/v1/dashboard/agents", headers={"Authorization": f"Bearer {TOKEN}"})
    assert status == 200 and json.loads(body)["agents"] == []
    status, headers, _ = c.request(0, "GET", f"/?token={TOKEN}")
    assert status == 303 and "HttpOnly" in headers["set-cookie"] and "SameSite=Strict" in headers["set-cookie"]
