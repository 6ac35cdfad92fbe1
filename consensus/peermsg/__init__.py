"""One module per peer message (STYLE.md P6): each decodes untrusted bytes, encodes, bounds sizes
before parsing and lists its error codes (`ERRORS`); a decode error is a `PeerProtocolError`
(consensus/verify.py), which penalises the peer and never reaches an agent.

    frontier  GET /v1/peer/frontier answer (JSON): origins held, peers, fork evidence, digest
    entries   GET /v1/log/entries answer (CBOR): a page of envelopes of one origin
    proof     GET /v1/log/proof/consistency answer (JSON): a consistency proof
    notify    POST /v1/peer/notify body (JSON): "I stored news", with the sender's digest
    cosign    POST /v1/peer/cosign body (JSON): a witness's cosignature line of a checkpoint

The request signature every peer request carries is consensus/messages.py. Golden vectors:
tests/vectors/peer-messages.json (tests/vectors/test_peer_message_vectors.py).
"""

from __future__ import annotations

import json
from typing import Any

from consensus.verify import PeerProtocolError


def load_json(body: bytes, bytes_max: int, what: str) -> Any:
    """An untrusted JSON answer, its size bounded before parsing; raises PeerProtocolError
    `oversized` or `bad_encoding`."""
    if len(body) > bytes_max:
        raise PeerProtocolError("oversized", f"{what} over {bytes_max} bytes")
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # nesting past the parser's limit too
        raise PeerProtocolError("bad_encoding", f"{what} does not decode") from None
