"""Handlers for submitting and reading events, and quota checks."""

from __future__ import annotations

import json

from aiohttp import web

from ledger.admission import check_timestamp
from ledger.errors import Invalid, Malformed
from ledger.signing import verify
from ledger.events import KINDS
from node.api import bodies
from node.appkeys import CLOCK_KEY, CONFIG_KEY, INGESTOR_KEY, QUERIES_KEY
from node.api.errors import render
from node.queries import parse_hex32


async def submit(request: web.Request) -> web.Response:
    """POST /v1/events: 201 accepted, 200 duplicate, or the error."""
    envelope = await bodies.single(request)
    (outcome,) = await request.app[INGESTOR_KEY].submit([envelope])
    if outcome.error:
        return render(outcome.error)
    status = 201 if outcome.receipt["status"] == "accepted" else 200
    return web.json_response(outcome.receipt, status=status)


async def submit_batch(request: web.Request) -> web.Response:
    """POST /v1/events/batch: 200 with one receipt or error per envelope, in order."""
    items = await bodies.batch(request, request.app[CONFIG_KEY].batch_events_max)
    outcomes = await request.app[INGESTOR_KEY].submit(items)
    results = [o.receipt if o.receipt else o.error.to_json() for o in outcomes]  # type: ignore[union-attr]
    accepted = sum(1 for o in outcomes if o.receipt and o.receipt["status"] == "accepted")
    duplicates = sum(1 for o in outcomes if o.receipt and o.receipt["status"] == "duplicate")
    return web.json_response(
        {"results": results, "accepted": accepted, "duplicates": duplicates, "errors": len(outcomes) - accepted - duplicates}
    )


async def get_event(request: web.Request) -> web.Response:
    """GET /v1/events/{id}: the stored envelope and its receipt."""
    return web.json_response(await request.app[QUERIES_KEY].event(request.match_info["id"]))


async def quota_check(request: web.Request) -> web.Response:
    """POST /v1/quota/check: would this event (or estimate) be allowed now; records nothing.

    Body: an envelope (CBOR or JSON, as for POST /v1/events), or the JSON
    estimate {"agent": hex, "kind": "act", "amounts": {"cost": 1200}}.
    """
    queries = request.app[QUERIES_KEY]
    now_ms = request.app[CLOCK_KEY].now_ms()
    if request.content_type == "application/json":
        doc = await request.json(loads=_loads)
        if isinstance(doc, dict) and "agent" in doc:
            return web.json_response(await _estimate(request, doc, now_ms))
    envelope = await bodies.single(request)
    verify(envelope.event.raw, envelope.sig, envelope.event.signer)
    check_timestamp(envelope.event.ts, now_ms, request.app[CONFIG_KEY].skew_ms)
    ev = envelope.event
    amounts = dict(zip(type(ev.body).METRICS, ev.body.metrics()))
    return web.json_response(await _answer(queries, ev.signer.hex(), ev.kind, amounts, now_ms, event_id=ev.id_hex))


def _loads(text: str) -> object:
    try:
        return json.loads(text)
    except ValueError as e:
        raise Malformed("malformed_json", f"body is not valid JSON: {e}") from None


async def _estimate(request: web.Request, doc: dict, now_ms: int) -> dict:
    for key in doc:
        if key not in ("agent", "kind", "amounts"):
            raise Malformed("unknown_field", f"unknown estimate key {key!r}")
    agent = doc.get("agent")
    parse_hex32(agent if isinstance(agent, str) else None, "agent")
    kind = doc.get("kind")
    if kind not in KINDS:
        raise Invalid("unknown_kind", f"kind must be one of {', '.join(sorted(KINDS))}")
    amounts = doc.get("amounts", {})
    metrics = KINDS[kind].METRICS
    if not isinstance(amounts, dict) or any(
        k not in metrics or type(v) is not int or v < 0 for k, v in amounts.items()
    ):
        raise Invalid("invalid_body", f"amounts maps metrics of {kind} ({', '.join(metrics)}) to unsigned integers")
    return await _answer(request.app[QUERIES_KEY], agent, kind, amounts, now_ms)


async def _answer(queries, agent_hex: str, kind: str, amounts: dict, now_ms: int, event_id: str | None = None) -> dict:
    balance = await queries.balance(agent_hex, now_ms)
    budgets = []
    for b in balance["budgets"]:
        if b["kind"] != kind:
            continue
        after = b["consumed"] + amounts.get(b["metric"], 0)
        budgets.append({**b, "consumed_after": after})
    answer = {"allowed": True, "reason": None, "agent": agent_hex, "kind": kind, "amounts": amounts, "budgets": budgets}
    if event_id:
        answer["id"] = event_id
    return answer
