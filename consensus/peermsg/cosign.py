"""A cosignature (POST /v1/peer/cosign): a witness's C2SP cosignature/v1 line of our checkpoint.

    JSON {"size": int, "line": "— <name> <base64>"}

Bounds: the body (COSIGN_BYTES_MAX). The line's signature is checked against the checkpoint
at that size by the receiver (ledger.checkpoint.verify_cosignature).
"""

from __future__ import annotations

import json

from ledger.checkpoint import NoteSignature
from ledger.errors import LedgerError

COSIGN_BYTES_MAX = 4096
ERRORS = ("oversized", "malformed_note")


class CosignError(ValueError):
    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


def encode(size: int, line: str) -> bytes:
    return json.dumps({"size": size, "line": line}).encode()


def decode(body: bytes) -> tuple[int, NoteSignature]:
    """(size, signature line); raises CosignError (ERRORS)."""
    if len(body) > COSIGN_BYTES_MAX:
        raise CosignError("oversized", f"a cosignature is at most {COSIGN_BYTES_MAX} bytes")
    try:
        doc = json.loads(body)
        size, line = doc["size"], doc["line"]
        if type(size) is not int or size < 0 or not isinstance(line, str):
            raise TypeError
        return size, NoteSignature.parse_line(line.rstrip("\n"))
    except (ValueError, KeyError, TypeError, LedgerError, UnicodeDecodeError, RecursionError):
        raise CosignError("malformed_note", 'a cosignature is {"size": N, "line": "— name base64"}') from None
