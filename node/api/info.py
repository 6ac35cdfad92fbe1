"""Handlers for the node's identity, agents' balances and usage, health and metrics."""

from __future__ import annotations

import json
from importlib import resources

from aiohttp import web

from ledger.checkpoint import verifier_key
from node import __version__
from node.api.params import int_param, str_param
from node.appkeys import REPORTS_KEY, CONFIG_KEY
from node.appkeys import CLOCK_KEY, METRICS_KEY, OWN_LOG_KEY, QUERIES_KEY, REPLICATOR_KEY

UNTIL_DEFAULT = 2**63 - 1


async def node_info(request: web.Request) -> web.Response:
    """GET /v1/node: identity, verifier key, origin line, version, peers."""
    own = request.app[OWN_LOG_KEY]
    return web.json_response(
        {
            "public_key": own.public_key.hex(),
            "vkey": verifier_key(own.origin_line, own.public_key),
            "origin_line": own.origin_line,
            "version": __version__,
            "peers": [p["url"] for p in request.app[REPLICATOR_KEY].peers_view()],
            "size": own.checkpoint_size,
            "read_only": own.read_only_reason is not None,
        }
    )


async def balance(request: web.Request) -> web.Response:
    """GET /v1/agents/{agent}/balance."""
    now_ms = request.app[CLOCK_KEY].now_ms()
    return web.json_response(await request.app[QUERIES_KEY].balance(request.match_info["agent"], now_ms))


async def usage(request: web.Request) -> web.Response:
    """GET /v1/agents/{agent}/usage?since=&until=&kind=."""
    since = int_param(request, "since", 0)
    until = int_param(request, "until", UNTIL_DEFAULT)
    kind = str_param(request, "kind")
    return web.json_response(await request.app[QUERIES_KEY].usage(request.match_info["agent"], since, until, kind))


async def healthz(request: web.Request) -> web.Response:
    """GET /healthz: 200 when writable, 503 read_only otherwise (same error shape)."""
    own = request.app[OWN_LOG_KEY]
    if own.read_only_reason:
        return web.json_response(
            {"error": {"code": "read_only", "message": f"node is read-only: {own.read_only_reason}"}}, status=503
        )
    return web.json_response({"status": "ok", "size": own.checkpoint_size})


async def metrics(request: web.Request) -> web.Response:
    """GET /metrics: Prometheus text format 0.0.4."""
    app = request.app
    # budget gauges are read at scrape time; capped at metrics_budget_scopes_max scopes (label cardinality)
    budgets = await app[REPORTS_KEY].budget_samples(app[CLOCK_KEY].now_ms(), app[CONFIG_KEY].metrics_budget_scopes_max) \
        if REPORTS_KEY in app else None
    body = app[METRICS_KEY].render(budgets)
    return web.Response(text=body, content_type="text/plain", charset="utf-8", headers={"X-Content-Type-Options": "nosniff"})


async def openapi(request: web.Request) -> web.Response:
    """GET /v1/openapi.json: the OpenAPI 3.1 description of this API."""
    text = resources.files("node").joinpath("openapi.json").read_text()
    return web.json_response(json.loads(text))


