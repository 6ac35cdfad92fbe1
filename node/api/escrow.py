"""Strict mode endpoints: a member asks for rights (peer request), anyone reads this node's rights.

`POST /v1/peer/escrow/ask` is a peer request (node/api/peer.py's `authenticate`):
the asking node must be admitted here and be a strict member; this node gives
what it can spare by logging an `escrow.transfer` to it (docs/strict.md).
"""

from __future__ import annotations

from aiohttp import web

from ledger.constants import COUNTER_MAX, TIME_MS_MAX
from ledger.errors import Invalid, TooLarge
from ledger.windows import WINDOWS, window_bounds
from node.api.bodies import json_doc
from node.api.peer import authenticate
from node.escrow import ESCROW_KEY

ASK_BODY_BYTES_MAX = 1024
_FIELDS = ("scope", "scope_id", "metric", "window", "start", "amount")


async def ask(request: web.Request) -> web.Response:
    """POST /v1/peer/escrow/ask {scope, scope_id, metric, window, start, amount}: give spare rights."""
    body = await request.read()  # in memory already (node.httpserver.request_bounds)
    if len(body) > ASK_BODY_BYTES_MAX:
        raise TooLarge("body_too_large", f"an ask is at most {ASK_BODY_BYTES_MAX} bytes")
    asker = (await authenticate(request, body)).node
    doc = json_doc(body)
    if not isinstance(doc, dict) or set(doc) != set(_FIELDS):
        raise Invalid("invalid_body", f"an ask is a map of exactly {', '.join(_FIELDS)}")
    scope, scope_id, metric, window, start, amount = (doc[f] for f in _FIELDS)
    if not all(isinstance(v, str) and 0 < len(v) <= 64 for v in (scope, scope_id, metric)) or window not in WINDOWS:
        raise Invalid("invalid_body", "scope, scope_id and metric are names; window one of " + ", ".join(WINDOWS))
    if type(start) is not int or not 0 <= start <= TIME_MS_MAX or window_bounds(window, start)[0] != start:
        raise Invalid("invalid_body", "start is the first ms of a window")
    if type(amount) is not int or not 1 <= amount <= COUNTER_MAX:
        raise Invalid("invalid_body", f"amount is a positive integer of at most {COUNTER_MAX}")
    answer = await request.app[ESCROW_KEY].give(asker, (scope, scope_id, metric, window, start), amount)
    return web.json_response(answer)


async def rights(request: web.Request) -> web.Response:
    """GET /v1/escrow: this node's rights in every strict key it has touched since it started."""
    return web.json_response(await request.app[ESCROW_KEY].view())
