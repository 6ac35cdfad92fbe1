"""The agent behind a request: its bearer token (PROTOCOL.md §6.1), verified with the key it names."""

from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

from ledger.credentials import Claims, check_times, verify_signature
from ledger.errors import BadSignature

TOKENS_CACHED_MAX = 4096


class TokenCache:
    """Tokens whose signature already verified (an agent reuses one token for days): the Ed25519
    check runs once per token; the time claims are checked on every request. Bounded, LRU."""

    def __init__(self, size_max: int = TOKENS_CACHED_MAX):
        self._claims: OrderedDict[str, Claims] = OrderedDict()
        self._max = size_max

    def agent(self, headers: Mapping[str, str], *, now_s: int, lifetime_s_max: int) -> bytes:
        """The agent's public key from `Authorization: Bearer <token>`; raises BadSignature (401) with a code."""
        auth = headers.get("Authorization", "")
        if not auth.startswith("Bearer ") or not auth[7:].strip():
            raise BadSignature("token_required", "send Authorization: Bearer <token> (mint one with `ats token`)")
        token = auth[7:].strip()
        claims = self._claims.get(token)
        if claims is None:
            claims = verify_signature(token)
            self._claims[token] = claims
            if len(self._claims) > self._max:
                self._claims.popitem(last=False)
        else:
            self._claims.move_to_end(token)
        return check_times(claims, now_s=now_s, lifetime_s_max=lifetime_s_max).agent


_SHARED = TokenCache()


def bearer_agent(headers: Mapping[str, str], *, now_s: int, lifetime_s_max: int) -> bytes:
    """The agent behind a request (see TokenCache.agent), with the process's shared cache."""
    return _SHARED.agent(headers, now_s=now_s, lifetime_s_max=lifetime_s_max)
