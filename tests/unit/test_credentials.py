"""Gateway credentials (PROTOCOL.md §6.1), checked against PyJWT as an independent implementation."""

from __future__ import annotations

import base64
import json

import jwt  # PyJWT: the oracle, never used by the node
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger.credentials import mint, verify_token
from ledger.errors import BadSignature
from ledger.signing import public_key_from_seed

SEED = bytes(range(32))
NOW = 1_767_225_600  # 2026-01-01
DAY = 86_400
LIFETIME = 90 * DAY


def _code(token: str, now: int = NOW, lifetime: int = LIFETIME) -> str:
    with pytest.raises(BadSignature) as e:
        verify_token(token, now_s=now, lifetime_s_max=lifetime)
    assert e.value.status_hint == 401
    return e.value.code


def test_minted_token_verifies_with_pyjwt_and_names_the_agent():
    token = mint(SEED, now_s=NOW, ttl_s=30 * DAY)
    pub = Ed25519PublicKey.from_public_bytes(public_key_from_seed(SEED))
    claims = jwt.decode(token, pub, algorithms=["EdDSA"], audience="ats-gateway", options={"verify_exp": False})
    assert claims["sub"] == public_key_from_seed(SEED).hex() and claims["exp"] == NOW + 30 * DAY
    assert verify_token(token, now_s=NOW, lifetime_s_max=LIFETIME).agent == public_key_from_seed(SEED)


def test_token_minted_by_pyjwt_is_accepted():
    private = Ed25519PrivateKey.from_private_bytes(SEED)
    claims = {"sub": public_key_from_seed(SEED).hex(), "aud": "ats-gateway", "exp": NOW + 3600, "jti": "x1"}
    token = jwt.encode(claims, private, algorithm="EdDSA")
    got = verify_token(token, now_s=NOW, lifetime_s_max=LIFETIME)
    assert got.agent == public_key_from_seed(SEED) and got.jti == "x1"


def test_expired_token_is_refused_after_the_leeway():
    token = mint(SEED, now_s=NOW - 2 * DAY, ttl_s=DAY)
    assert _code(token) == "token_expired"


def test_token_for_another_audience_is_refused():
    token = mint(SEED, now_s=NOW, ttl_s=DAY, audience="other-service")
    assert _code(token) == "token_audience"


def test_token_longer_than_the_lifetime_maximum_is_refused():
    token = mint(SEED, now_s=NOW, ttl_s=400 * DAY)
    assert _code(token) == "token_lifetime"


def test_token_not_yet_valid_is_refused():
    token = mint(SEED, now_s=NOW + DAY, ttl_s=DAY)
    assert _code(token) == "token_not_yet_valid"


def test_token_signed_by_another_key_than_sub_is_refused():
    other = bytes(32)
    head, _body, sig = mint(other, now_s=NOW, ttl_s=DAY).split(".")
    claims = {"sub": public_key_from_seed(SEED).hex(), "aud": "ats-gateway", "exp": NOW + DAY}
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    assert _code(f"{head}.{body}.{sig}") == "token_signature"


@pytest.mark.parametrize("token", [
    "", "abc", "a.b", "a.b.c.d", "!!.??.##", "x" * 5000,
    base64.urlsafe_b64encode(b'{"alg":"none"}').rstrip(b"=").decode() + ".e30.",
    base64.urlsafe_b64encode(b"[1]").rstrip(b"=").decode() + ".e30.AA",
    # nested past the JSON parser's recursion limit, within the token's 4,096 characters
    pytest.param(base64.urlsafe_b64encode(b"[" * 2500).rstrip(b"=").decode() + ".e30.AA", id="deep-header"),
    pytest.param("eyJhbGciOiJFZERTQSJ9." + base64.urlsafe_b64encode(b"[" * 2500).rstrip(b"=").decode() + ".AA",
                 id="deep-claims"),
])
def test_malformed_tokens_are_refused_as_invalid(token):
    assert _code(token) == "invalid_token"


def test_hs256_token_is_refused_whatever_its_secret():
    token = jwt.encode({"sub": "00" * 32, "aud": "ats-gateway", "exp": NOW + 60}, "secret-key-of-32-bytes-or-more!!", algorithm="HS256")
    assert _code(token) == "invalid_token"
