"""A notification (POST /v1/peer/notify): the sender stored news; pull from it.

    JSON {"digest": hex}  (the body may be empty: the notification itself is the news)

Bounds: the body (NOTIFY_BYTES_MAX). The digest only saves a pull (the receiver skips it when
the digest is its own), so a digest that does not parse is ignored, never an error.
"""

from __future__ import annotations

import json

NOTIFY_BYTES_MAX = 4096  # as node/api/peer.py bounds a notification before authenticating it
DIGEST_CHARS_MAX = 128
ERRORS = ("oversized",)


def encode(digest: str) -> bytes:
    return json.dumps({"digest": digest}).encode()


def decode(body: bytes) -> str | None:
    """The sender's digest, or None (absent or not parsing); raises ValueError("oversized")."""
    if len(body) > NOTIFY_BYTES_MAX:
        raise ValueError("oversized")
    try:
        digest = json.loads(body).get("digest") if body else None
    except (ValueError, UnicodeDecodeError, AttributeError, RecursionError):
        return None
    return digest if isinstance(digest, str) and len(digest) <= DIGEST_CHARS_MAX else None
