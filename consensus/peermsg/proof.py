"""A consistency proof (GET /v1/log/proof/consistency?origin=&from=&to=).

    JSON {"proof": [hex32, ...]}

Bounds: the body (PROOF_BYTES_MAX), hashes (PROOF_HASHES_MAX: a proof between two trees of at
most 2**64 leaves has fewer). Whether it proves anything is consensus.verify's question.
"""

from __future__ import annotations

import json
from typing import Sequence

from consensus.peermsg import load_json
from consensus.verify import PeerProtocolError

PROOF_BYTES_MAX = 64 * 1024
PROOF_HASHES_MAX = 64
ERRORS = ("oversized", "bad_encoding", "bad_proof")


def encode(proof: Sequence[bytes]) -> bytes:
    return json.dumps({"proof": [h.hex() for h in proof]}, separators=(",", ":")).encode()


def decode(body: bytes) -> list[bytes]:
    """The proof's hashes (at most PROOF_HASHES_MAX kept); raises PeerProtocolError (ERRORS)."""
    return from_doc(load_json(body, PROOF_BYTES_MAX, "proof answer"))


def from_doc(doc: object) -> list[bytes]:
    try:
        hashes = [bytes.fromhex(h) for h in doc["proof"]][:PROOF_HASHES_MAX]  # type: ignore[index]
        if any(len(h) != 32 for h in hashes):
            raise ValueError("hash size")
    except (KeyError, TypeError, ValueError, AttributeError):
        raise PeerProtocolError("bad_proof", "consistency proof does not parse") from None
    return hashes
