"""Read grants: who may read what off loopback (`read.grant`, `read.revoke`; docs/read-access.md).

An authority issues a bearer token for reading one scope (an agent, a user, a team, a platform or
`all` of the node), as a reader (`read`: balances, usage, reports, budgets) or an auditor (`audit`:
the log, events and proofs). The token itself never enters the log: the `read.grant` record holds
its SHA-256 (`token`), its scope, role and expiry, so the grant replicates and every node accepts
the same tokens; `read.revoke` names the same hash. Revocation wins whatever the order the records
arrive in (a revoked hash is never valid again), so the fold is commutative.

Pure: the node passes the time in.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ledger.errors import BadSignature, Forbidden, Invalid
from ledger.bodies import Body, _bytes32, _time_ms, spec

GRANT_SCOPES = ("agent", "user", "team", "platform", "all")
ROLES = ("read", "audit")
TOKEN_PREFIX = "atsr_"
_ID_RE = re.compile(r"[a-z0-9._-]{1,64}")
_HEX_RE = re.compile(r"[0-9a-f]{64}")


def token_hash(token: str) -> bytes:
    """What a grant record holds of a token: SHA-256 of its text."""
    return hashlib.sha256(token.encode()).digest()


def _grant_scope(name: str, value: Any) -> str:
    if type(value) is not str or value not in GRANT_SCOPES:
        raise Invalid("invalid_scope", f"{name} must be one of {', '.join(GRANT_SCOPES)}")
    return value


def _grant_id(name: str, value: Any) -> str:
    if type(value) is not str or not (_ID_RE.fullmatch(value) or _HEX_RE.fullmatch(value)):
        raise Invalid("invalid_body", f"{name} must be a name (a-z0-9._-) or 64 lowercase hex digits")
    return value


def _role(name: str, value: Any) -> str:
    if type(value) is not str or value not in ROLES:
        raise Invalid("invalid_body", f"{name} must be one of {', '.join(ROLES)}")
    return value


def _label(name: str, value: Any) -> str:
    if type(value) is not str or len(value) > 200:
        raise Invalid("invalid_body", f"{name} must be text of at most 200 characters")
    return value


class _GrantBody(Body):
    METRICS: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class ReadGrantBody(_GrantBody):
    """A bearer token (by its SHA-256) may read one scope until `expires` (ms)."""

    KIND: ClassVar[str] = "read.grant"
    token: bytes = spec(_bytes32)
    scope: str = spec(_grant_scope)
    id: str = spec(_grant_id)
    role: str = spec(_role)
    expires: int = spec(_time_ms)
    label: str | None = spec(_label, required=False)


@dataclass(frozen=True)
class ReadRevokeBody(_GrantBody):
    """The token with this SHA-256 reads nothing any more."""

    KIND: ClassVar[str] = "read.revoke"
    token: bytes = spec(_bytes32)
    reason: str = spec(_label)


@dataclass(frozen=True)
class Grant:
    scope: str
    scope_id: str
    role: str
    expires_ms: int
    label: str

    def covers(self, scope: str, scope_id: str, chain: list[tuple[str, str]] | None = None) -> bool:
        """Whether this grant reads (scope, scope_id): the same scope, `all`, or an ancestor of an
        agent (chain: the agent's agent, user, team, platform scopes)."""
        if self.scope == "all":
            return True
        if (self.scope, self.scope_id) == (scope, scope_id):
            return True
        return scope == "agent" and chain is not None and (self.scope, self.scope_id) in chain


class Grants:
    """Every read.grant and read.revoke record, folded."""

    def __init__(self) -> None:
        self._grants: dict[bytes, Grant] = {}
        self._revoked: set[bytes] = set()

    def apply(self, kind: str, body: Any, ts_ms: int) -> None:
        if kind == "read.revoke":
            self._revoked.add(body.token)
            return
        if body.scope in ("agent", "user") and not _HEX_RE.fullmatch(body.id):
            raise Invalid("invalid_body", f"a {body.scope} is named by its key: 64 lowercase hex digits")
        if body.expires <= ts_ms:
            raise Invalid("token_expired", "a read grant must expire after its own ts")
        if body.scope == "all" and body.id != "all":
            raise Invalid("invalid_body", "a grant of scope all has the id all")
        # of two grants of one hash (a re-issue), the later expiry counts: an order-free rule
        old = self._grants.get(body.token)
        if old is None or body.expires > old.expires_ms:
            self._grants[body.token] = Grant(body.scope, body.id, body.role, body.expires, body.label or "")

    def check(self, token: str, now_ms: int) -> Grant:
        """The grant of a presented token; raises bad_token, token_revoked or token_expired."""
        digest = token_hash(token)
        if digest in self._revoked:
            raise BadSignature("token_revoked", "this read token was revoked")
        grant = self._grants.get(digest)
        if grant is None:
            raise BadSignature("bad_token", "this read token was never granted here (or its grant has not reached this node)")
        if grant.expires_ms <= now_ms:
            raise BadSignature("token_expired", f"this read token expired at {grant.expires_ms} ms")
        return grant

    @staticmethod
    def refuse(grant_scope: str, scope: str, scope_id: str) -> Forbidden:
        return Forbidden("token_scope", f"this token reads {grant_scope}, not {scope} {scope_id[:64]}")
