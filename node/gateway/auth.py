"""The agent behind a request: its bearer token (PROTOCOL.md §6.1), verified with the key it names."""

from __future__ import annotations

from typing import Mapping

from ledger.credentials import verify_token
from ledger.errors import BadSignature


def bearer_agent(headers: Mapping[str, str], *, now_s: int, lifetime_s_max: int) -> bytes:
    """The agent's public key from `Authorization: Bearer <token>`; raises BadSignature (401) with a code."""
    auth = headers.get("Authorization", "")
    if not auth.startswith("Bearer ") or not auth[7:].strip():
        raise BadSignature("token_required", "send Authorization: Bearer <token> (mint one with `ats token`)")
    return verify_token(auth[7:].strip(), now_s=now_s, lifetime_s_max=lifetime_s_max).agent
