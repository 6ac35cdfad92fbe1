"""Peer request authentication: what a node signs to prove a request is its own (pure).

A peer request carries three headers: `X-ATS-Node` (the requester's public key,
hex), `X-ATS-Time` (ms) and `X-ATS-Signature` (base64 Ed25519 signature). The
signature covers `b"ats-peer/v1\\n"` (its own domain prefix, so it can never be
mistaken for an event or a note signature), the method, the path with its
query, the time, and the SHA-256 of the body — so a captured request cannot be
replayed to another path or with another body, and goes stale after the skew.
"""

from __future__ import annotations

import hashlib

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
