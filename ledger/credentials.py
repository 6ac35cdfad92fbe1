"""Gateway credentials (PROTOCOL.md §6.1): compact JWS (RFC 7515) with EdDSA (RFC 8037), Ed25519 only.

An agent mints its own bearer token offline from the key it already has: header
`{"alg":"EdDSA","typ":"JWT"}`, claims `sub` (its public key, 64 lowercase hex), `aud`
(`"ats-gateway"`), `exp` (seconds), optional `iat`, `nbf`, `jti`. The node verifies the
signature with the key named by `sub`, so it stores no secret.

Written here in ~100 lines on pynacl (already the signing dependency) rather than with
PyJWT, which needs `cryptography` for EdDSA: one algorithm, one key type and five claims
do not earn two new runtime dependencies. PyJWT checks our tokens in the tests (an
independent oracle, P10). Pure: `now_s` is an argument.
"""

from __future__ import annotations

import base64
import json
import re
from dataclasses import dataclass
from typing import Any

from ledger.errors import BadSignature
from ledger.signing import public_key_from_seed, sign_raw, verify_raw

AUDIENCE = "ats-gateway"
TOKEN_CHARS_MAX = 4096  # bounded before any decoding (P6)
LEEWAY_S = 60  # clock skew allowed on exp and nbf, as common JWT libraries allow
_HEX64 = re.compile(r"[0-9a-f]{64}")
_B64URL = re.compile(r"[A-Za-z0-9_-]*")
_HEADER = {"alg": "EdDSA", "typ": "JWT"}


@dataclass(frozen=True)
class Claims:
    """A verified token's claims: the agent's key, and its expiry in seconds."""

    agent: bytes
    exp: int
    jti: str | None = None
    nbf: int | None = None


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64url(part: str) -> bytes:
    if not _B64URL.fullmatch(part) or len(part) % 4 == 1:
        raise BadSignature("invalid_token", "token parts must be base64url without padding")
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def mint(seed: bytes, *, now_s: int, ttl_s: int, jti: str | None = None, audience: str = AUDIENCE) -> str:
    """A compact JWS signed by the agent key with this seed, valid for ttl_s seconds from now_s."""
    claims: dict[str, Any] = {"sub": public_key_from_seed(seed).hex(), "aud": audience, "iat": now_s,
                              "nbf": now_s, "exp": now_s + ttl_s}
    if jti is not None:
        claims["jti"] = jti
    head = _b64url(json.dumps(_HEADER, separators=(",", ":")).encode())
    body = _b64url(json.dumps(claims, separators=(",", ":"), sort_keys=True).encode())
    signing_input = f"{head}.{body}".encode("ascii")
    return f"{head}.{body}.{_b64url(sign_raw(signing_input, seed))}"


def _json_object(part: str, what: str) -> dict[str, Any]:
    try:
        value = json.loads(_unb64url(part))
    except (ValueError, UnicodeDecodeError, RecursionError):  # 4,096 characters hold 2,000 nested arrays
        raise BadSignature("invalid_token", f"token {what} is not JSON") from None
    if type(value) is not dict:
        raise BadSignature("invalid_token", f"token {what} is not a JSON object")
    return value


def _seconds(claims: dict[str, Any], name: str, required: bool) -> int | None:
    value = claims.get(name)
    if value is None and not required:
        return None
    # RFC 7519 NumericDate may have a fraction; we take whole seconds and refuse anything else
    if type(value) not in (int, float) or value != value or not 0 <= value < 2**53:
        raise BadSignature("invalid_token", f"claim {name} must be seconds since the epoch")
    return int(value)


def verify_token(token: str, *, now_s: int, lifetime_s_max: int, audience: str = AUDIENCE) -> Claims:
    """Check a compact JWS and its claims at now_s; raises BadSignature (401) with a code saying why.

    Codes: invalid_token (shape, header, claims), token_signature (does not verify with `sub`),
    token_audience (aud is not ours), token_expired (exp passed), token_not_yet_valid (nbf ahead),
    token_lifetime (exp further ahead than lifetime_s_max).
    """
    return check_times(verify_signature(token, audience=audience), now_s=now_s, lifetime_s_max=lifetime_s_max)


def check_times(claims: Claims, *, now_s: int, lifetime_s_max: int) -> Claims:
    """The time claims of a verified token at now_s (a cached verification is checked again here)."""
    if claims.exp + LEEWAY_S <= now_s:
        raise BadSignature("token_expired", f"token expired at {claims.exp} (now {now_s})")
    if claims.nbf is not None and claims.nbf > now_s + LEEWAY_S:
        raise BadSignature("token_not_yet_valid", f"token is not valid before {claims.nbf} (now {now_s})")
    if claims.exp - now_s > lifetime_s_max:
        raise BadSignature("token_lifetime", f"token expires more than {lifetime_s_max} s from now; mint a shorter one")
    return claims


def verify_signature(token: str, *, audience: str = AUDIENCE) -> Claims:
    """A token's claims once its shape, signature and audience check out (times not checked)."""
    if type(token) is not str or len(token) > TOKEN_CHARS_MAX:
        raise BadSignature("invalid_token", f"a token is text of at most {TOKEN_CHARS_MAX} characters")
    parts = token.split(".")
    if len(parts) != 3:
        raise BadSignature("invalid_token", "a token is a compact JWS: three base64url parts joined by dots")
    header = _json_object(parts[0], "header")
    if header.get("alg") != "EdDSA" or header.get("crit") is not None or header.get("crv", "Ed25519") != "Ed25519":
        raise BadSignature("invalid_token", 'token header must say "alg": "EdDSA" (Ed25519), without crit')
    claims = _json_object(parts[1], "claims")
    sub = claims.get("sub")
    if type(sub) is not str or not _HEX64.fullmatch(sub):
        raise BadSignature("invalid_token", "claim sub must be the agent's public key, 64 lowercase hex digits")
    signature = _unb64url(parts[2])
    if not verify_raw(f"{parts[0]}.{parts[1]}".encode("ascii"), signature, bytes.fromhex(sub)):
        raise BadSignature("token_signature", "token signature does not verify with the key in sub")
    aud = claims.get("aud")
    if not (aud == audience or (type(aud) is list and audience in aud)):
        raise BadSignature("token_audience", f'token audience must be "{audience}"')
    exp = _seconds(claims, "exp", True) or 0
    nbf = _seconds(claims, "nbf", False)
    _seconds(claims, "iat", False)
    jti = claims.get("jti")
    return Claims(agent=bytes.fromhex(sub), exp=exp, jti=jti if type(jti) is str else None, nbf=nbf)
