"""Handlers for auditors: checkpoints, inclusion and consistency proofs, entries."""

from __future__ import annotations

import base64

import cbor2
from aiohttp import web

from node.api.params import int_param, str_param
from node.appkeys import QUERIES_KEY


async def checkpoint(request: web.Request) -> web.Response:
    """GET /v1/log/checkpoint: the latest signed checkpoint note, text/plain."""
    note = await request.app[QUERIES_KEY].checkpoint(str_param(request, "origin"))
    return web.Response(text=note, content_type="text/plain", charset="utf-8")


async def inclusion(request: web.Request) -> web.Response:
    """GET /v1/log/proof/inclusion?id=&origin=&size=."""
    event_id = request.query.get("id", "")
    result = await request.app[QUERIES_KEY].inclusion(event_id, str_param(request, "origin"), int_param(request, "size"))
    return web.json_response(result)


async def consistency(request: web.Request) -> web.Response:
    """GET /v1/log/proof/consistency?from=M&to=N&origin=."""
    first = int_param(request, "from", required=True)
    result = await request.app[QUERIES_KEY].consistency(first, int_param(request, "to"), str_param(request, "origin"))
    return web.json_response(result)


async def entries(request: web.Request) -> web.Response:
    """GET /v1/log/entries?start=&end=&origin=: fewer than asked, never more."""
    start = int_param(request, "start", required=True)
    end = int_param(request, "end", required=True)
    doc = await request.app[QUERIES_KEY].entries(start, end, str_param(request, "origin"))
    if "application/cbor" in request.headers.get("Accept", ""):
        # the compact form peers fetch: envelopes as byte strings, no base64 (~3 bytes of framing each)
        return web.Response(body=cbor2.dumps(doc), content_type="application/cbor")
    doc["entries"] = [base64.b64encode(e).decode() for e in doc["entries"]]
    return web.json_response(doc)
