"""Peer endpoints (frontier, cosignatures) and the cluster's visibility (peers, digest, forks).

Peer requests are authenticated by node keys (consensus.messages): the headers
name the requesting node and sign the request; a node not admitted here (and
open membership off) is refused with 403 not_authority.
"""

from __future__ import annotations

from aiohttp import web

from consensus.messages import SignedRequest, check_peer_request
from consensus.peermsg import cosign as msg_cosign
from consensus.peermsg import notify as msg_notify
from ledger.errors import Forbidden, Malformed, NotFound, TooLarge
from node.appkeys import CLOCK_KEY, CONFIG_KEY, QUERIES_KEY, REPLAY_GUARD_KEY, REPLICATOR_KEY

COSIGN_BODY_BYTES_MAX = msg_cosign.COSIGN_BYTES_MAX


async def authenticate(request: web.Request, body: bytes) -> SignedRequest:
    """The signed request, if the headers sign it, the node is admitted and the request is new.

    Only what the signature covers is acted on: the advertised URL comes from
    the verified request, never from the raw headers.
    """
    now_ms = request.app[CLOCK_KEY].now_ms()
    config = request.app[CONFIG_KEY]
    signed = check_peer_request(request.headers, request.method, request.path_qs, body, now_ms, config.skew_ms,
                                accept_v1=config.peer_protocol_v1)
    replicator = request.app[REPLICATOR_KEY]
    if not replicator.admitted(signed.node):
        raise Forbidden("not_authority", "this node is not admitted here (no node.admit record)")
    request.app[REPLAY_GUARD_KEY].check(signed, now_ms)
    replicator.heard_from(signed.node, signed.advertise)
    return signed


async def frontier(request: web.Request) -> web.Response:
    """GET /v1/peer/frontier: every origin held (size and signed checkpoint), known peers, forks."""
    await authenticate(request, b"")
    doc = await request.app[REPLICATOR_KEY].frontier_answer(request.query.get("digest"))
    if doc is None:  # the in-sync check: an empty 204 when both nodes hold exactly the same logs
        return web.Response(status=204)
    return web.json_response(doc)


async def notify(request: web.Request) -> web.Response:
    """POST /v1/peer/notify {"digest"}: a peer stored new events; pull from it now, unless our
    digest already equals its digest."""
    body = await request.read()  # in memory already (node.httpserver.request_bounds)
    if len(body) > COSIGN_BODY_BYTES_MAX:
        raise TooLarge("body_too_large", "a notification is a few dozen bytes")
    signed = await authenticate(request, body)
    digest = msg_notify.decode(body)  # None if it does not parse: the notification itself is the news
    await request.app[REPLICATOR_KEY].notified(signed.node, signed.advertise, digest)
    return web.Response(status=204)


async def cosign(request: web.Request) -> web.Response:
    """POST /v1/peer/cosign {"size", "line"}: a witness's cosignature of our checkpoint at size."""
    body = await request.read()  # in memory already (node.httpserver.request_bounds)
    if len(body) > COSIGN_BODY_BYTES_MAX:
        raise TooLarge("body_too_large", "a cosignature is a few hundred bytes")
    witness = (await authenticate(request, body)).node
    try:
        size, sig = msg_cosign.decode(body)  # consensus/peermsg/cosign.py
    except msg_cosign.CosignError as e:
        raise Malformed("malformed_note", str(e)) from None
    await request.app[REPLICATOR_KEY].accept_cosignature(witness, size, sig.line())
    return web.json_response({"stored": True, "size": size}, status=201)


async def peers(request: web.Request) -> web.Response:
    """GET /v1/peers: per peer: state, last contact, how far behind each side is; per origin:
    the size held here and the largest size seen at a peer (replication progress)."""
    replicator = request.app[REPLICATOR_KEY]
    held = {o["origin"]: o["size"] for o in (await request.app[QUERIES_KEY].digest())["origins"]}
    seen = replicator.seen_sizes()
    origins = [
        {"origin": o, "held": held.get(o, 0), "seen": max(seen.get(o, 0), held.get(o, 0))}
        for o in sorted(set(held) | {o for o in seen if replicator.admitted(bytes.fromhex(o))})
    ]
    return web.json_response({"peers": replicator.peers_view(), "origins": origins})


async def digest(request: web.Request) -> web.Response:
    """GET /v1/cluster/digest: a hash of every held origin's size and root, and the origins."""
    return web.json_response(await request.app[QUERIES_KEY].digest())


async def forks(request: web.Request) -> web.Response:
    """GET /v1/forks: evidence of origins that signed two inconsistent checkpoints."""
    return web.json_response({"forks": await request.app[QUERIES_KEY].forks()})


async def anchored(request: web.Request) -> web.Response:
    """GET /v1/log/checkpoint/anchored: the latest checkpoint cosigned by witness_quorum witnesses."""
    origin = request.query.get("origin") or None
    note = await request.app[QUERIES_KEY].anchored(origin, request.app[REPLICATOR_KEY].witness_quorum)
    if note is None:
        raise NotFound("not_anchored", "no checkpoint has enough cosignatures yet")
    return web.Response(text=note, content_type="text/plain", charset="utf-8")


