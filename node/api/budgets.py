"""GET /v1/budgets: the owner budgets (budget.set records) in force and scheduled, with their use."""

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
    at_ms = int_param(request, "at", request.app[CLOCK_KEY].now_ms())
    return web.json_response(await request.app[QUERIES_KEY].owner_budgets(scope, scope_id, at_ms))
