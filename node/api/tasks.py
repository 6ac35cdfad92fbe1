"""The task meter's endpoints (`ats exec`, docs/gateway.md): reserve a task before dispatch, settle it after.

`POST /v1/tasks` reserves the task's estimate as one run of the agent (every budget of the agent and
its scopes, held until settled); `POST /v1/tasks/{task}` records what the task used as node-signed
`act` (`agent.run`), `cpt` and `dat` events about the agent and settles the reservation. Both take
the agent's gateway token (PROTOCOL.md §6.1), so the agent's key never leaves the scheduler's
machine and only the agent that reserved a task may settle it.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from ledger.errors import Invalid, Malformed, NotFound
from ledger.pricing import format_t
from node.api.bodies import json_doc
from node.appkeys import CLOCK_KEY, CONFIG_KEY, METER_KEY
from node.gateway.auth import bearer_agent

TASK_BODY_BYTES_MAX = 4096
TIMEOUT_MS_DEFAULT = 3_600_000
TIMEOUT_MS_MAX = 24 * 3_600_000
AMOUNT_MAX = 2**53  # bytes, ms, MB: far beyond any task, and exact in every JSON parser
HOST_CHARS_MAX = 64


def _agent(request: web.Request) -> bytes:
    return bearer_agent(request.headers, now_s=request.app[CLOCK_KEY].now_ms() // 1000,
                        lifetime_s_max=request.app[CONFIG_KEY].llm_token_lifetime_s_max)


async def _doc(request: web.Request) -> dict[str, Any]:
    raw = await request.read()  # in memory already (node.httpserver.request_bounds)
    if len(raw) > TASK_BODY_BYTES_MAX:
        raise Malformed("bad_request", f"a task body is at most {TASK_BODY_BYTES_MAX} bytes")
    doc = json_doc(raw or b"{}", request.charset)  # malformed_json, nesting too deep included
    if type(doc) is not dict:
        raise Malformed("malformed_json", "body must be a JSON object")
    return doc


def _uint(doc: dict[str, Any], name: str, default: int | None = None, top: int = AMOUNT_MAX) -> int:
    value = doc.get(name, default)
    if type(value) is not int or not 0 <= value <= top:
        raise Invalid("invalid_body", f"{name} must be an integer 0..{top}")
    return value


async def reserve(request: web.Request) -> web.Response:
    """POST /v1/tasks {"estimate"?, "timeout_ms"?, "host"?}: hold the estimate before the task starts."""
    agent = _agent(request)
    doc = await _doc(request)
    for key in doc:
        if key not in ("estimate", "timeout_ms", "host"):
            raise Malformed("unknown_field", f"unknown task key {key!r}")
    meter = request.app[METER_KEY]
    now_ms = request.app[CLOCK_KEY].now_ms()
    prices = await meter.prices(now_ms)
    estimate = _uint(doc, "estimate", prices.get("agent.run", 0))
    timeout_ms = _uint(doc, "timeout_ms", TIMEOUT_MS_DEFAULT, TIMEOUT_MS_MAX)
    if timeout_ms == 0:
        raise Invalid("invalid_body", "timeout_ms must be at least 1")
    host = doc.get("host", "ats-exec")
    if type(host) is not str or not 1 <= len(host) <= HOST_CHARS_MAX or not host.isprintable():
        raise Invalid("invalid_body", f"host must be 1..{HOST_CHARS_MAX} printable characters")
    for call in await meter.expired_tasks():  # the exec side of these died: charge them now
        await meter.recover([call], "the task was not settled before it expired; charged at its reservation")
    reservation = await meter.reserve(agent, "task", host, 0, 0, cost=estimate, timeout_ms=timeout_ms)
    call, budgets = reservation.call, reservation.budgets
    return web.json_response({
        "task": call.call.hex(), "reserved": call.cost, "expires": call.expires_ms,
        "max_cost_per_run": await meter.max_cost_per_run(agent),
        "prices": {k: prices.get(k, 0) for k in ("cpt.unit", "dat.byte_per_kb")}, "budgets": budgets,
    }, status=201)


async def settle(request: web.Request) -> web.Response:
    """POST /v1/tasks/{task} {"cpu_ms", "mem_mb", "jobs", "read", "written", "dur_ms"}: record and settle."""
    agent = _agent(request)
    meter = request.app[METER_KEY]
    try:
        call_id = bytes.fromhex(request.match_info["task"])
    except ValueError:
        call_id = b""
    call = meter.open_call(call_id) if len(call_id) == 16 else None
    if call is None or call.agent != agent or call.kind != "task":
        raise NotFound("task_not_found", "no open task with this id for this agent (never reserved, settled, or expired)")
    doc = await _doc(request)
    names = ("cpu_ms", "mem_mb", "jobs", "read", "written", "dur_ms")
    for key in doc:
        if key not in names:
            raise Malformed("unknown_field", f"unknown task key {key!r}")
    amounts = {name: _uint(doc, name, 0) for name in names}
    outcomes, cost = await meter.charge_task(call, **amounts)
    receipt = outcomes[0].receipt or {}
    return web.json_response({
        "task": call.call.hex(), "cost": cost, "cost_T": format_t(cost), "reserved": call.cost,
        "events": [(o.receipt or {}).get("id") for o in outcomes], "budgets": receipt.get("budgets", []),
    })
