"""Handlers for submitting and reading events, and quota checks."""

from __future__ import annotations

from aiohttp import web

from ledger.admission import check_timestamp
from ledger.errors import Invalid, Malformed
from ledger.signing import verify
from ledger.events import Event, body_from_json, unsigned_event
from node.api import bodies
from node.appkeys import CLOCK_KEY, CONFIG_KEY, INGESTOR_KEY, QUERIES_KEY, WORKERS_KEY
from node.api.errors import render
from node.api.jsonbody import json_response
from node.queries import parse_hex32


_singles = 0  # POST /v1/events being handled now (one event loop per process)


async def submit(request: web.Request) -> web.Response:
    """POST /v1/events: 201 accepted, 200 duplicate, or the error."""
    global _singles
    _singles += 1
    try:
        busy = _singles > request.app[CONFIG_KEY].singles_inline_max
        envelope, verified = await bodies.single_checked(request, request.app.get(WORKERS_KEY), busy)
        (outcome,) = await request.app[INGESTOR_KEY].submit([envelope], client=request.remote or "", verified=verified)
    finally:
        _singles -= 1
    if outcome.error:
        return render(outcome.error)
    status = 201 if outcome.receipt["status"] == "accepted" else 200
    return json_response(outcome.receipt, status=status)


async def submit_batch(request: web.Request) -> web.Response:
    """POST /v1/events/batch: 200 with one receipt or error per envelope, in order."""
    items, verified = await bodies.batch(request, request.app[CONFIG_KEY].batch_events_max,
                                         request.app.get(WORKERS_KEY))
    outcomes = await request.app[INGESTOR_KEY].submit(items, client=request.remote or "", verified=verified)
    results = [o.receipt if o.receipt else o.error.to_json() for o in outcomes]  # type: ignore[union-attr]
    accepted = sum(1 for o in outcomes if o.receipt and o.receipt["status"] == "accepted")
    duplicates = sum(1 for o in outcomes if o.receipt and o.receipt["status"] == "duplicate")
    return json_response(
        {"results": results, "accepted": accepted, "duplicates": duplicates, "errors": len(outcomes) - accepted - duplicates}
    )


async def get_event(request: web.Request) -> web.Response:
    """GET /v1/events/{id}: the stored envelope and its receipt."""
    return web.json_response(await request.app[QUERIES_KEY].event(request.match_info["id"]))


async def quota_check(request: web.Request) -> web.Response:
    """POST /v1/quota/check: would this event (or estimated run) be allowed now; records nothing.

    Body: an envelope (CBOR or JSON, as for POST /v1/events), or the JSON
    estimate {"agent": hex, "kind": "run.reserve", "body": {...}} with byte
    fields in hex — e.g. a run's op, tokens and tools, priced by the node.
    """
    queries = request.app[QUERIES_KEY]
    now_ms = request.app[CLOCK_KEY].now_ms()
    if request.content_type == "application/json":
        doc = bodies.json_doc(await request.read(), request.charset)
        if isinstance(doc, dict) and "agent" in doc:
            return web.json_response(await queries.quota_check(_estimate(doc, now_ms), now_ms))
    envelope = await bodies.single(request)
    verify(envelope.event.raw, envelope.sig, envelope.event.signer)
    check_timestamp(envelope.event.ts, now_ms, request.app[CONFIG_KEY].skew_ms)
    answer = await queries.quota_check(envelope.event, now_ms)
    answer["id"] = envelope.event.id_hex
    return web.json_response(answer)


def _estimate(doc: dict, now_ms: int) -> Event:
    for key in doc:
        if key not in ("agent", "kind", "body"):
            raise Malformed("unknown_field", f"unknown estimate key {key!r}")
    agent = doc.get("agent")
    signer = parse_hex32(agent if isinstance(agent, str) else None, "agent")
    kind = doc.get("kind")
    if not isinstance(kind, str):
        raise Invalid("unknown_kind", "kind must be the name of an event kind")
    return unsigned_event(kind, signer, now_ms, body_from_json(kind, doc.get("body", {})))
