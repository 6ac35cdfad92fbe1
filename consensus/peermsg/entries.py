"""A page of entries (GET /v1/log/entries?origin=&start=&end=, Accept: application/cbor).

    CBOR {"entries": [envelope bytes, ...]}

The answer to a request for [start, end) holds at least one and at most end - start envelopes
("fewer than asked, never more"). Bounds: the body (`body_bytes_max(asked)`, ENTRY_BYTES_BUDGET
per entry asked), CBOR items (asked + ITEMS_SLACK) before the value is built. The envelopes stay
untrusted until consensus.verify.verify_range checks them against the signed root.
"""

from __future__ import annotations

from typing import Sequence

from consensus.verify import PeerProtocolError
from ledger import encoding

ENTRY_BYTES_BUDGET = 8 * 1024  # bytes per entry asked, for the body bound
ITEMS_SLACK = 16
ERRORS = ("oversized", "bad_encoding", "bad_entry", "bad_range")


def body_bytes_max(asked: int) -> int:
    return asked * ENTRY_BYTES_BUDGET


def encode(envelopes: Sequence[bytes]) -> bytes:
    return encoding.encode({"entries": list(envelopes)})


def decode(body: bytes, asked: int, items_max: int | None = None) -> list[bytes]:
    """The envelopes of an answer to a request for `asked` entries; raises PeerProtocolError (ERRORS)."""
    if len(body) > body_bytes_max(asked):
        raise PeerProtocolError("oversized", f"entries answer over {body_bytes_max(asked)} bytes")
    try:
        doc = encoding.decode(body, items_max=items_max if items_max is not None else asked + ITEMS_SLACK)
    except Exception:
        raise PeerProtocolError("bad_encoding", "entries answer does not decode") from None
    raw = doc.get("entries") if isinstance(doc, dict) else None
    if not isinstance(raw, list) or not all(type(e) is bytes for e in raw):
        raise PeerProtocolError("bad_entry", "entries are not a list of byte strings")
    if not raw or len(raw) > asked:
        raise PeerProtocolError("bad_range", f"asked {asked} entries, got {len(raw)}")
    return raw
