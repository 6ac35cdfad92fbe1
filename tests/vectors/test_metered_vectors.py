"""Golden vectors of tests/vectors/metered.json: node-signed metered events and a gateway credential.

Each event is rebuilt from its fields and must match the stored bytes; an LLM call's cost must
equal the price computed from the vector's price table; the credential must verify with PyJWT
(an independent implementation) and be reproduced byte for byte (Ed25519 is deterministic).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

import ledger.policy  # noqa: F401
from ledger.credentials import mint, verify_token
from ledger.errors import Invalid
from ledger.events import charged_agent, is_metered, make_event_bytes, parse_envelope
from ledger.pricing import llm_cost_milli, model_key
from ledger.signing import public_key_from_seed, sign, verify

VECTORS = json.loads((Path(__file__).parent / "metered.json").read_text(encoding="utf-8"))


def _value(v: Any) -> Any:
    if isinstance(v, dict):
        return bytes.fromhex(v["hex"]) if set(v) == {"hex"} else {k: _value(x) for k, x in v.items()}
    return v


@pytest.mark.parametrize("vec", VECTORS["events"], ids=[v["name"] for v in VECTORS["events"]])
def test_metered_event_rebuilt_from_fields_matches_golden_bytes(vec: dict[str, Any]) -> None:
    seed = bytes.fromhex(vec["node_seed_hex"])
    fields = _value(vec["event"])
    raw = make_event_bytes(fields["kind"], public_key_from_seed(seed), fields["ts"], fields["nonce"], fields["body"])
    assert raw.hex() == vec["event_cbor_hex"]
    assert cbor2.dumps(fields, canonical=True) == raw
    assert hashlib.sha256(raw).hexdigest() == vec["id_hex"]
    assert sign(raw, seed).hex() == vec["signature_hex"]
    env = parse_envelope(bytes.fromhex(vec["envelope_cbor_hex"]))
    verify(env.event.raw, env.sig, env.event.signer)
    assert is_metered(env.event)
    assert charged_agent(env.event).hex() == VECTORS["agent_public_key_hex"] != env.event.signer.hex()
    pricing = vec.get("pricing")
    if pricing:
        body = fields["body"]
        assert llm_cost_milli(pricing["prices"], body["model"], body["tokens_in"], body["tokens_out"]) == pricing["cost"] == body["cost"]


def test_llm_fields_go_together_and_sum_to_units() -> None:
    node = public_key_from_seed(bytes(32))
    body = {"op": "llm.call", "cost": 1, "units": 10, "model": "m", "tokens_in": 4, "tokens_out": 5}
    with pytest.raises(Invalid):
        make_event_bytes("act", node, 1, bytes(16), body)
    with pytest.raises(Invalid):
        make_event_bytes("act", node, 1, bytes(16), {"op": "llm.call", "cost": 1, "model": "m"})


def test_model_names_map_to_price_names() -> None:
    assert model_key("meta-llama/Llama-3.1-8B-Instruct") == "meta-llama-llama-3.1-8b-instruct"
    assert len("llm.out." + model_key("x" * 200)) == 64


def test_credential_vector_reproduces_and_verifies_with_pyjwt() -> None:
    c = VECTORS["credential"]
    seed = bytes.fromhex(c["seed_hex"])
    assert mint(seed, now_s=c["now_s"], ttl_s=c["ttl_s"], jti=c["jti"]) == c["token"]
    pub = Ed25519PublicKey.from_public_bytes(public_key_from_seed(seed))
    claims = jwt.decode(c["token"], pub, algorithms=["EdDSA"], audience="ats-gateway", options={"verify_exp": False})
    assert claims["sub"] == public_key_from_seed(seed).hex()
    assert verify_token(c["token"], now_s=c["now_s"], lifetime_s_max=c["ttl_s"]).jti == c["jti"]
