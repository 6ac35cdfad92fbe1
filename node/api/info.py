"""Handlers for the node's identity, agents' balances and usage, health and metrics."""

from __future__ import annotations

import asyncio
import json
import os
from importlib import resources

from aiohttp import web

from ledger.checkpoint import verifier_key
from node import __version__
from node.api.params import int_param, str_param
from node.appkeys import REPORTS_KEY, CONFIG_KEY
from node.appkeys import CLOCK_KEY, INGESTOR_KEY, METRICS_KEY, OWN_LOG_KEY, QUERIES_KEY, REPLICATOR_KEY

UNTIL_DEFAULT = 2**63 - 1
HEALTH_READ_TIMEOUT_S = 2.0


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
    """GET /healthz: what works (reads, writes, replication) and why not.

    200 while the node accepts writes (status "ok", or "degraded" when every
    peer is failing); 503 when it does not (status "read_only", "disk_full" or
    "write_failing"), with the contract's error object naming the cause.
    """
    app = request.app
    own, config = app[OWN_LOG_KEY], app[CONFIG_KEY]
    reads = await _reads(app)
    writes = _writes(app, own, config)
    replication = _replication(app)
    if not writes["ok"]:
        status = writes["code"]
    elif not reads["ok"] or not replication["ok"]:
        status = "degraded"
    else:
        status = "ok"
    doc = {"status": status, "size": own.checkpoint_size, "reads": reads, "writes": writes, "replication": replication}
    if not writes["ok"]:
        doc["error"] = {"code": writes["code"], "message": writes["reason"]}
        return web.json_response(doc, status=503)
    return web.json_response(doc)


async def _reads(app: web.Application) -> dict:
    try:
        await asyncio.wait_for(app[QUERIES_KEY].checkpoint(None), HEALTH_READ_TIMEOUT_S)
    except asyncio.TimeoutError:
        return {"ok": False, "reason": f"a read of the latest checkpoint took over {HEALTH_READ_TIMEOUT_S:g} s"}
    except Exception as e:  # noqa: BLE001 - health reports every failure, it never raises
        return {"ok": False, "reason": f"a read of the latest checkpoint failed: {e}"}
    return {"ok": True}


def _writes(app: web.Application, own, config) -> dict:
    if own.read_only_reason:
        return {"ok": False, "code": "read_only", "reason": f"node is read-only: {own.read_only_reason}"}
    try:
        fs = os.statvfs(config.data_dir)
        free = fs.f_bavail * fs.f_frsize
    except OSError as e:
        return {"ok": False, "code": "write_failing", "reason": f"cannot stat data_dir: {e.strerror}"}
    if free < config.disk_free_bytes_min:
        return {"ok": False, "code": "disk_full", "free_bytes": free,
                "reason": f"{free} bytes free in data_dir, under disk_free_bytes_min ({config.disk_free_bytes_min})"}
    error = app[INGESTOR_KEY].write_error if INGESTOR_KEY in app else None
    if error is not None:
        full = "full" in error.message.lower()
        return {"ok": False, "code": "disk_full" if full else "write_failing", "free_bytes": free,
                "reason": f"the last commit failed and none succeeded since: {error.message}"}
    return {"ok": True, "free_bytes": free}


def _replication(app: web.Application) -> dict:
    views = app[REPLICATOR_KEY].peers_view() if REPLICATOR_KEY in app else []
    failing = sum(1 for v in views if v["state"] != "ok")
    doc = {"ok": not views or failing < len(views), "peers": len(views), "failing": failing}
    if not doc["ok"]:
        doc["reason"] = f"every peer ({len(views)}) is failing: events are stored here but not replicated"
    return doc


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


