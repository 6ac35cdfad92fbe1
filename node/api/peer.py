"""Peer endpoints (frontier, cosignatures) and the cluster's visibility (peers, digest, forks).

Peer requests are authenticated by node keys (consensus.messages): the headers
name the requesting node and sign the request; a node not admitted here (and
open membership off) is refused with 403 not_authority.
"""

from __future__ import annotations

import base64
import binascii
import json

from aiohttp import web

from consensus.messages import request_message
from ledger.checkpoint import NoteSignature, open_checkpoint, origin_line, verify_cosignature
from ledger.errors import BadSignature, Forbidden, LedgerError, Malformed, NotFound, TooLarge
from ledger.signing import verify_raw
from node.appkeys import CLOCK_KEY, CONFIG_KEY, OWN_LOG_KEY, QUERIES_KEY, REPLICATOR_KEY

COSIGN_BODY_BYTES_MAX = 4096


async def authenticate(request: web.Request, body: bytes) -> bytes:
    """The requesting node's key, if the headers sign this request and the node is admitted."""
    try:
        node = bytes.fromhex(request.headers["X-ATS-Node"])
        time_ms = int(request.headers["X-ATS-Time"])
        sig = base64.b64decode(request.headers["X-ATS-Signature"], validate=True)
    except (KeyError, ValueError, binascii.Error):
        raise BadSignature("bad_signature", "peer requests carry X-ATS-Node, X-ATS-Time and X-ATS-Signature") from None
    now = request.app[CLOCK_KEY].now_ms()
    if abs(now - time_ms) > request.app[CONFIG_KEY].skew_ms:
        raise BadSignature("bad_signature", "peer request time is outside the allowed skew")
    if len(node) != 32 or not verify_raw(request_message(request.method, request.path_qs, time_ms, body), sig, node):
        raise BadSignature("bad_signature", "peer request signature does not verify")
    if not request.app[REPLICATOR_KEY].admitted(node):
        raise Forbidden("not_authority", "this node is not admitted here (no node.admit record)")
    return node


async def frontier(request: web.Request) -> web.Response:
    """GET /v1/peer/frontier: every origin held (size and signed checkpoint), known peers, forks."""
    await authenticate(request, b"")
    replicator = request.app[REPLICATOR_KEY]
    advertised = request.headers.get("X-ATS-Advertise")
    if advertised:  # an authenticated, admitted node tells us where it listens
        replicator.add_peer(advertised, "contacted")
    doc = await request.app[QUERIES_KEY].frontier()
    if request.query.get("digest") == doc["digest"]:
        # the in-sync check: an empty 204 when both nodes hold exactly the same logs
        return web.Response(status=204)
    doc["peers"] = replicator.known_urls()
    return web.json_response(doc)


async def notify(request: web.Request) -> web.Response:
    """POST /v1/peer/notify: a peer stored new events; pull from peers now."""
    body = await request.content.read(COSIGN_BODY_BYTES_MAX + 1)
    await authenticate(request, body)
    request.app[REPLICATOR_KEY].wake()
    return web.Response(status=204)


async def cosign(request: web.Request) -> web.Response:
    """POST /v1/peer/cosign {"size", "line"}: a witness's cosignature of our checkpoint at size."""
    body = await request.content.read(COSIGN_BODY_BYTES_MAX + 1)
    if len(body) > COSIGN_BODY_BYTES_MAX:
        raise TooLarge("body_too_large", "a cosignature is a few hundred bytes")
    witness = await authenticate(request, body)
    try:
        doc = json.loads(body)
        size, line = doc["size"], doc["line"]
        if type(size) is not int or not isinstance(line, str):
            raise TypeError
        sig = NoteSignature.parse_line(line.rstrip("\n"))
    except (ValueError, KeyError, TypeError, LedgerError):
        raise Malformed("malformed_note", 'a cosignature is {"size": N, "line": "— name base64"}') from None
    own = request.app[OWN_LOG_KEY]
    note = await request.app[QUERIES_KEY].checkpoint_note_at(size)
    cp, _ = open_checkpoint(note, own.public_key)
    verify_cosignature(cp, sig, origin_line(witness), witness)
    await request.app[QUERIES_KEY].add_cosignature(size, witness, sig.line().rstrip("\n"))
    await request.app[REPLICATOR_KEY].anchor_if_new()
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


