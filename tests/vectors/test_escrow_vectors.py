"""Golden vectors of tests/vectors/escrow.json pin strict mode's escrow messages (docs/strict.md).

Each ask and answer is encoded from its fields by consensus/escrow_messages.py and must match the
stored body byte for byte, decode back to the same fields, and read the same with the standard
library's JSON parser (an independent oracle). Each refused body must be refused with its error
code, and every code must be one the module lists and ledger/errors.py documents. The transfer
record is rebuilt by consensus.escrow.transfer_event from the vector's nonce (randomness is an
argument) and checked against cbor2's canonical encoder, SHA-256 and a deterministic Ed25519
signature, then parsed back as an escrow.transfer of the same key.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest

from consensus import escrow_messages as wire
from consensus.escrow import transfer_event
from ledger.errors import CODES, LedgerError
from ledger.events import make_envelope_bytes, parse_envelope
from ledger.signing import public_key_from_seed, sign, verify

VECTORS = json.loads((Path(__file__).parent / "escrow.json").read_text(encoding="utf-8"))


def test_error_codes_and_bounds_are_the_modules() -> None:
    assert VECTORS["error_codes"] == list(wire.ERROR_CODES)
    assert set(wire.ERROR_CODES) <= set(CODES)
    assert (VECTORS["ask_body_bytes_max"], VECTORS["answer_bytes_max"]) == (wire.ASK_BODY_BYTES_MAX, wire.ANSWER_BYTES_MAX)
    codes = {v["code"] for v in VECTORS["bad_asks"] + VECTORS["bad_answers"]}
    assert codes == set(wire.ERROR_CODES)  # every code is pinned by a vector


@pytest.mark.parametrize("vec", VECTORS["asks"], ids=[v["name"] for v in VECTORS["asks"]])
def test_ask_encodes_to_golden_bytes_and_decodes_back(vec: dict[str, Any]) -> None:
    ask = wire.Ask(tuple(vec["key"]), vec["amount"])  # type: ignore[arg-type]
    assert wire.encode_ask(ask) == vec["body"].encode()
    assert wire.decode_ask(vec["body"].encode()) == ask
    assert json.loads(vec["body"]) == dict(zip(wire.ASK_FIELDS, (*vec["key"], vec["amount"])))


@pytest.mark.parametrize("vec", VECTORS["answers"], ids=[v["name"] for v in VECTORS["answers"]])
def test_answer_encodes_to_golden_bytes_and_decodes_back(vec: dict[str, Any]) -> None:
    answer = wire.Answer(vec["given"], vec["id"])
    assert wire.encode_answer(answer) == vec["body"].encode()
    assert wire.decode_answer(vec["body"].encode()) == answer
    assert json.loads(vec["body"]) == wire.answer_doc(answer)


@pytest.mark.parametrize("vec", VECTORS["bad_asks"], ids=[v["name"] for v in VECTORS["bad_asks"]])
def test_bad_ask_is_refused_with_its_code(vec: dict[str, Any]) -> None:
    with pytest.raises(LedgerError) as e:
        wire.decode_ask(bytes.fromhex(vec["body_hex"]))
    assert e.value.code == vec["code"]


@pytest.mark.parametrize("vec", VECTORS["bad_answers"], ids=[v["name"] for v in VECTORS["bad_answers"]])
def test_bad_answer_is_refused_with_its_code(vec: dict[str, Any]) -> None:
    with pytest.raises(LedgerError) as e:
        wire.decode_answer(bytes.fromhex(vec["body_hex"]))
    assert e.value.code == vec["code"]


def test_transfer_record_rebuilt_from_its_fields_and_nonce_matches_golden_bytes() -> None:
    t = VECTORS["transfer"]
    seed, to, key = bytes.fromhex(t["seed_hex"]), bytes.fromhex(t["to_hex"]), tuple(t["key"])
    raw = transfer_event(key, to, t["amount"], t["seq"], public_key_from_seed(seed), t["ts"], bytes.fromhex(t["nonce_hex"]))  # type: ignore[arg-type]
    assert raw.hex() == t["event_cbor_hex"]
    fields = cbor2.loads(raw)
    assert cbor2.dumps(fields, canonical=True) == raw  # canonical: an independent encoder agrees
    assert fields["kind"] == "escrow.transfer" and fields["nonce"].hex() == t["nonce_hex"]
    assert hashlib.sha256(raw).hexdigest() == t["id_hex"]
    assert sign(raw, seed).hex() == t["signature_hex"]
    assert make_envelope_bytes(raw, sign(raw, seed)).hex() == t["envelope_cbor_hex"]
    env = parse_envelope(bytes.fromhex(t["envelope_cbor_hex"]))
    verify(env.event.raw, env.sig, env.event.signer)
    body = env.event.body
    assert (body.key, body.to, body.amount, body.seq) == (key, to, t["amount"], t["seq"])


def test_the_decoders_bound_bytes_before_parsing() -> None:
    huge = b"[" * (wire.ASK_BODY_BYTES_MAX + 1)  # would nest too deeply if it were parsed
    for decode in (wire.decode_ask, wire.decode_answer):
        with pytest.raises(LedgerError) as e:
            decode(huge)
        assert e.value.code == "body_too_large"
    with pytest.raises(LedgerError) as e:
        wire.decode_ask(b"[" * 1000)
    assert e.value.code in ("malformed_json", "invalid_body")
