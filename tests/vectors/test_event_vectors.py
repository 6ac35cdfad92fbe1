"""Golden vectors of tests/vectors/events.json pin the event wire format (docs/protocol.md).

Each event is rebuilt from its fields with ledger code and must match the stored bytes exactly:
event CBOR, id, Ed25519 signature (RFC 8032 signatures are deterministic), envelope and leaf hash.
Each stored envelope is parsed back and its signature verified. Where it is cheap, an independent
oracle checks the same bytes without ledger code: cbor2's canonical encoder (for maps whose keys
are all short text, RFC 7049 length-first order equals RFC 8949 §4.2.1 bytewise order), hashlib
and pynacl with the signing prefix spelled out. The policy vectors pin arrays, booleans, nested maps
and null in signed bodies. The log section pins the Merkle root, proofs, the signed checkpoint note
and a cosignature/v1 line over the five metering envelopes.
"""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import cbor2
import pytest
from nacl.signing import SigningKey, VerifyKey

import ledger.policy  # noqa: F401  (registers the policy, governance and run kinds, as the node does)
from ledger import encoding, merkle
from ledger.checkpoint import (
    Checkpoint,
    NoteSignature,
    Verifier,
    cosign,
    open_checkpoint,
    origin_line,
    sign_checkpoint,
    verifier_key,
    verify_cosignature,
)
from ledger.errors import BadSignature, LedgerError
from ledger.events import KINDS, envelope_from_parts, make_envelope_bytes, make_event_bytes, parse_envelope
from ledger.signing import event_id, public_key_from_seed, sign, verify

VECTORS = json.loads((Path(__file__).parent / "events.json").read_text(encoding="utf-8"))
EVENTS = VECTORS["events"]
LOG = VECTORS["log"]
PREFIX = b"ats-event/v1\n"  # PROTOCOL.md §3, spelled out here on purpose


def _value(v: Any) -> Any:
    """JSON field → CBOR value: {"hex": ...} is a byte string, maps recurse."""
    if isinstance(v, dict):
        return bytes.fromhex(v["hex"]) if set(v) == {"hex"} else {k: _value(x) for k, x in v.items()}
    return v


def _ids(vectors: list[dict[str, Any]]) -> list[str]:
    return [v["name"] for v in vectors]


def test_vectors_cover_every_metering_kind_and_policy_records() -> None:
    kinds = {v["event"]["kind"] for v in EVENTS}
    assert kinds >= {"act", "dat", "cpt", "trt", "agent.register", "gov.propose", "gov.vote", "run.reserve"}
    assert kinds <= set(KINDS)
    assert bytes.fromhex(VECTORS["signing_prefix_hex"]) == PREFIX
    by_name = {v["name"]: v for v in EVENTS}
    assert by_name["gov-vote"]["event"]["body"]["proposal"]["hex"] == by_name["gov-propose"]["id_hex"]


@pytest.mark.parametrize("vec", EVENTS, ids=_ids(EVENTS))
def test_event_rebuilt_from_fields_matches_golden_bytes(vec: dict[str, Any]) -> None:
    seed = bytes.fromhex(vec["seed_hex"])
    fields = _value(vec["event"])
    signer = public_key_from_seed(seed)
    assert signer.hex() == vec["public_key_hex"] == fields["signer"].hex()
    raw = make_event_bytes(fields["kind"], signer, fields["ts"], fields["nonce"], fields["body"])
    assert raw.hex() == vec["event_cbor_hex"]
    assert encoding.encode(fields) == raw
    assert cbor2.dumps(fields, canonical=True) == raw  # independent encoder
    assert event_id(raw).hex() == vec["id_hex"] == hashlib.sha256(raw).hexdigest()
    sig = sign(raw, seed)
    assert sig.hex() == vec["signature_hex"]
    envelope = make_envelope_bytes(raw, sig)
    assert envelope.hex() == vec["envelope_hex"]
    assert cbor2.dumps({"event": raw, "sig": sig}, canonical=True) == envelope
    assert merkle.leaf_hash(envelope).hex() == vec["leaf_hash_hex"]
    assert hashlib.sha256(b"\x00" + envelope).hexdigest() == vec["leaf_hash_hex"]


@pytest.mark.parametrize("vec", EVENTS, ids=_ids(EVENTS))
def test_golden_envelope_parses_back_and_verifies(vec: dict[str, Any]) -> None:
    envelope = bytes.fromhex(vec["envelope_hex"])
    env = parse_envelope(envelope)
    fields = _value(vec["event"])
    ev = env.event
    assert (ev.v, ev.kind, ev.signer, ev.ts, ev.nonce) == (
        fields["v"], fields["kind"], fields["signer"], fields["ts"], fields["nonce"]
    )
    assert ev.body.to_map() == fields["body"]
    assert ev.raw.hex() == vec["event_cbor_hex"]
    assert ev.id_hex == vec["id_hex"]
    assert env.sig.hex() == vec["signature_hex"]
    assert env.raw == envelope
    assert encoding.decode_canonical(ev.raw) == fields
    verify(ev.raw, env.sig, ev.signer)
    VerifyKey(ev.signer).verify(PREFIX + ev.raw, env.sig)  # independent verifier
    # The JSON form carries the same bytes in standard base64.
    js = vec["envelope_json"]
    from_json = envelope_from_parts(base64.b64decode(js["event"]), base64.b64decode(js["sig"]))
    assert from_json.raw == envelope


@pytest.mark.parametrize("vec", EVENTS, ids=_ids(EVENTS))
def test_tampered_golden_event_fails_its_signature(vec: dict[str, Any]) -> None:
    raw = bytearray(bytes.fromhex(vec["event_cbor_hex"]))
    raw[-1] ^= 0x01  # last byte of the signer key: still a valid event, another signer
    with pytest.raises(BadSignature):
        verify(bytes(raw), bytes.fromhex(vec["signature_hex"]), bytes.fromhex(vec["public_key_hex"]))
    # Signing without the prefix gives a different signature: the prefix is part of the contract.
    bare = SigningKey(bytes.fromhex(vec["seed_hex"])).sign(bytes.fromhex(vec["event_cbor_hex"])).signature
    assert bare.hex() != vec["signature_hex"]


@pytest.mark.parametrize("vec", EVENTS[:1], ids=_ids(EVENTS[:1]))
def test_golden_event_in_another_key_order_is_not_canonical(vec: dict[str, Any]) -> None:
    fields = _value(vec["event"])
    reordered = cbor2.dumps({k: fields[k] for k in ("v", "kind", "signer", "ts", "nonce", "body")})
    assert reordered != bytes.fromhex(vec["event_cbor_hex"])
    with pytest.raises(LedgerError) as info:
        encoding.decode_canonical(reordered)
    assert info.value.code == "not_canonical"


def test_log_of_golden_envelopes_matches_root_proofs_and_checkpoint() -> None:
    by_name = {v["name"]: v for v in EVENTS}
    leaves = [merkle.leaf_hash(bytes.fromhex(by_name[n]["envelope_hex"])) for n in LOG["entries"]]
    stored: dict[int, bytes] = {}
    frontier = merkle.Frontier()
    for leaf in leaves:
        stored.update(frontier.append(leaf))
    root = frontier.root()
    assert (frontier.size, root.hex()) == (LOG["size"], LOG["root_hex"])

    inc = LOG["inclusion"]
    proof = [bytes.fromhex(h) for h in inc["proof_hex"]]
    got = merkle.inclusion_proof(inc["index"], inc["size"], [stored[i] for i in merkle.inclusion_proof_indexes(inc["index"], inc["size"])])
    assert got == proof
    assert leaves[inc["index"]].hex() == inc["leaf_hash_hex"]
    assert merkle.verify_inclusion(inc["index"], inc["size"], leaves[inc["index"]], proof, root)

    con = LOG["consistency"]
    proof = [bytes.fromhex(h) for h in con["proof_hex"]]
    old_root = merkle.tree_hash(con["from"], [stored[i] for i in merkle.tree_hash_indexes(con["from"])])
    assert old_root.hex() == con["root_from_hex"]
    got = merkle.consistency_proof(con["from"], con["to"], [stored[i] for i in merkle.consistency_proof_indexes(con["from"], con["to"])])
    assert got == proof
    assert merkle.verify_consistency(con["from"], con["to"], old_root, root, proof)
    assert not merkle.verify_consistency(0, con["to"], merkle.EMPTY_ROOT, root, [])  # size-0 rule


def test_golden_checkpoint_note_and_cosignature() -> None:
    seed = bytes.fromhex(LOG["node_seed_hex"])
    public_key = public_key_from_seed(seed)
    assert public_key.hex() == LOG["node_public_key_hex"]
    assert origin_line(public_key) == LOG["origin_line"] == "ats-ledger/" + public_key.hex()
    assert verifier_key(LOG["origin_line"], public_key) == LOG["vkey"]
    assert Verifier.from_vkey(LOG["vkey"]).public_key == public_key
    cp = Checkpoint(LOG["origin_line"], LOG["size"], bytes.fromhex(LOG["root_hex"]))
    assert cp.body() == LOG["checkpoint_body"]
    assert sign_checkpoint(cp, seed) == LOG["checkpoint_note"]
    assert open_checkpoint(LOG["checkpoint_note"], public_key) == (cp, [])

    co = LOG["cosignature"]
    w_seed = bytes.fromhex(co["witness_seed_hex"])
    w_key = public_key_from_seed(w_seed)
    assert w_key.hex() == co["witness_public_key_hex"]
    sig = cosign(cp, co["witness_name"], w_seed, co["timestamp_s"])
    assert sig.line() == co["line"]
    parsed = NoteSignature.parse_line(co["line"].rstrip("\n"))
    assert verify_cosignature(cp, parsed, co["witness_name"], w_key) == co["timestamp_s"]
