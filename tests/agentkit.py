"""Test helpers to build signed events, as an agent would."""

from __future__ import annotations

import os
import time
from typing import Any

from ledger.events import make_envelope_bytes, make_event_bytes
from ledger.signing import public_key_from_seed, sign


class TestAgent:
    __test__ = False

    def __init__(self, seed: bytes | None = None):
        self.seed = seed or os.urandom(32)
        self.public_key = public_key_from_seed(self.seed)

    def event(self, kind: str = "act", body: dict[str, Any] | None = None, ts: int | None = None,
              nonce: bytes | None = None) -> bytes:
        body = body if body is not None else {"op": "llm.call", "cost": 1000, "units": 10}
        return make_event_bytes(kind, self.public_key, int(time.time() * 1000) if ts is None else ts,
                                nonce or os.urandom(16), body)

    def envelope(self, kind: str = "act", body: dict[str, Any] | None = None, ts: int | None = None) -> bytes:
        raw = self.event(kind, body, ts)
        return make_envelope_bytes(raw, sign(raw, self.seed))
