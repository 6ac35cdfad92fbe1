"""Strict mode endpoints: a member asks for rights (peer request), anyone reads this node's rights.

`POST /v1/peer/escrow/ask` is a peer request (node/api/peer.py's `authenticate`):
the asking node must be admitted here and be a strict member; this node gives
what it can spare by logging an `escrow.transfer` to it (docs/strict.md). The
body is decoded and bounded by consensus/escrow_messages.py.
"""

from __future__ import annotations

from aiohttp import web

from consensus import escrow_messages as wire
from ledger.errors import TooLarge
from node.api.peer import authenticate
from node.escrow import ESCROW_KEY

ASK_BODY_BYTES_MAX = wire.ASK_BODY_BYTES_MAX


async def ask(request: web.Request) -> web.Response:
    """POST /v1/peer/escrow/ask {scope, scope_id, metric, window, start, amount}: give spare rights."""
    body = await request.read()  # in memory already (node.httpserver.request_bounds)
    if len(body) > ASK_BODY_BYTES_MAX:  # before the signature is checked: nothing large is hashed
        raise TooLarge("body_too_large", f"an ask is at most {ASK_BODY_BYTES_MAX} bytes")
    asker = (await authenticate(request, body)).node
    msg = wire.decode_ask(body)
    answer = await request.app[ESCROW_KEY].give(asker, msg.key, msg.amount)
    return web.json_response(answer)


async def rights(request: web.Request) -> web.Response:
    """GET /v1/escrow: this node's rights in every strict key it has touched since it started."""
    return web.json_response(await request.app[ESCROW_KEY].view())
