"""Peer request authentication: what a node signs to prove a request is its own (pure).

A peer request carries three headers: `X-ATS-Node` (the requester's public key,
hex), `X-ATS-Time` (ms) and `X-ATS-Signature` (base64 Ed25519 signature). The
signature covers `b"ats-peer/v1\\n"` (its own domain prefix, so it can never be
mistaken for an event or a note signature), the method, the path with its
query, the time, and the SHA-256 of the body — so a captured request cannot be
replayed to another path or with another body, and goes stale after the skew.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Mapping

from ledger.errors import BadSignature
from ledger.signing import sign_raw, verify_raw

PEER_SIGNING_PREFIX = b"ats-peer/v1\n"
FRONTIER_ORIGINS_MAX = 4096  # origins in one frontier answer
FRONTIER_BYTES_MAX = 8 * 1024 * 1024  # one frontier answer, before JSON decoding
PEERS_EXCHANGED_MAX = 64  # peer URLs in one frontier answer


def request_message(method: str, path_qs: str, time_ms: int, body: bytes) -> bytes:
    """The bytes a peer request's signature covers."""
    return (
        PEER_SIGNING_PREFIX
        + f"{method.upper()} {path_qs}\n{time_ms}\n".encode()
        + hashlib.sha256(body).digest()
    )

FORKS_EXCHANGED_MAX = 16  # fork evidence records in one frontier answer
PEER_HEADERS = ("X-ATS-Node", "X-ATS-Time", "X-ATS-Signature")


def check_peer_request(headers: Mapping[str, str], method: str, path_qs: str, body: bytes, now_ms: int,
                       skew_ms: int) -> bytes:
    """The requesting node's key if the headers sign this request within the skew.

    Raises BadSignature("bad_signature"). Admission (is this node one we
    replicate with?) is the caller's question, not this one's.
    """
    try:
        node = bytes.fromhex(headers["X-ATS-Node"])
        time_ms = int(headers["X-ATS-Time"])
        sig = base64.b64decode(headers["X-ATS-Signature"], validate=True)
    except (KeyError, ValueError, binascii.Error):
        raise BadSignature("bad_signature", "peer requests carry X-ATS-Node, X-ATS-Time and X-ATS-Signature") from None
    if abs(now_ms - time_ms) > skew_ms:
        raise BadSignature("bad_signature", "peer request time is outside the allowed skew")
    if len(node) != 32 or not verify_raw(request_message(method, path_qs, time_ms, body), sig, node):
        raise BadSignature("bad_signature", "peer request signature does not verify")
    return node


def peer_headers(method: str, path_qs: str, body: bytes, now_ms: int, node: bytes, seed: bytes) -> dict[str, str]:
    """The headers that sign a peer request as node's (seed is its private key seed)."""
    sig = sign_raw(request_message(method, path_qs, now_ms, body), seed)
    return {"X-ATS-Node": node.hex(), "X-ATS-Time": str(now_ms), "X-ATS-Signature": base64.b64encode(sig).decode()}
