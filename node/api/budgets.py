"""GET /v1/budgets (owner budgets in force and scheduled, with their use) and GET /v1/names/{name}."""

from __future__ import annotations

from aiohttp import web

from ledger.errors import Invalid
from ledger.scoped import SCOPES
from node.api.params import int_param, str_param
from node.appkeys import CLOCK_KEY, QUERIES_KEY


async def listing(request: web.Request) -> web.Response:
    """GET /v1/budgets?scope=&id=&at=: every owner budget, or one scope's."""
    scope = str_param(request, "scope")
    scope_id = str_param(request, "id")
    if scope is not None and scope not in SCOPES:
        raise Invalid("invalid_scope", f"scope must be one of {', '.join(SCOPES)}")
    if scope_id is not None and (len(scope_id) > 64 or scope is None):
        raise Invalid("bad_parameter", "id needs a scope and is at most 64 characters")
    if scope in ("agent", "user") and scope_id is not None:
        scope_id = request.app[QUERIES_KEY].identity(scope_id, "id").hex()  # a readable name, or hex
    at_ms = int_param(request, "at", request.app[CLOCK_KEY].now_ms())
    return web.json_response(await request.app[QUERIES_KEY].owner_budgets(scope, scope_id, at_ms))


async def name(request: web.Request) -> web.Response:
    """GET /v1/names/{name}: the agent's or user's key of a readable name (agent.register)."""
    return web.json_response(request.app[QUERIES_KEY].name_of(request.match_info["name"]))
