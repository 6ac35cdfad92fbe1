"""Golden vectors of tests/vectors/peer-messages.json (written by make_peer_message_vectors.py):
every peer message module (consensus/peermsg/) decodes the stored bytes to the stored fields,
encodes them back byte for byte, and refuses each invalid vector with its stable error code."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from consensus.peermsg import cosign, entries, frontier, notify, proof
from consensus.verify import PeerProtocolError
from tests.vectors.make_peer_message_vectors import build

VECTORS = json.loads((Path(__file__).parent / "peer-messages.json").read_text(encoding="utf-8"))
MODULES = {"frontier": frontier, "entries": entries, "proof": proof, "notify": notify, "cosign": cosign}


def test_the_vectors_are_what_the_generator_writes():
    assert build() == VECTORS


def _decode(message: str, vec: dict):
    body = bytes.fromhex(vec["hex"])
    if message == "entries":
        return entries.decode(body, vec["asked"])
    return MODULES[message].decode(body)


@pytest.mark.parametrize("message,vec", [(m, v) for m in MODULES for v in VECTORS[m]["valid"]],
                         ids=lambda x: x if isinstance(x, str) else x["name"])
def test_valid_messages_decode_to_their_fields_and_encode_back(message, vec):
    out = _decode(message, vec)
    body = bytes.fromhex(vec["hex"])
    if message == "frontier":
        assert out.node.hex() == vec["node"] and list(out.peers) == vec["peers"]
        assert [[o.hex(), s, n] for o, s, n in out.origins] == vec["origins"]
        assert frontier.encode(out) == body
    elif message == "entries":
        assert [e.hex() for e in out] == vec["entries"] and entries.encode(out) == body
    elif message == "proof":
        assert [h.hex() for h in out] == vec["proof"] and proof.encode(out) == body
    elif message == "notify":
        assert out == vec["digest"]
        if vec["name"] == "digest":
            assert notify.encode(out) == body
    else:
        size, sig = out
        assert size == vec["size"] and sig.line() == vec["line"] and cosign.encode(size, sig.line()) == body


@pytest.mark.parametrize("message,vec", [(m, v) for m in MODULES for v in VECTORS[m]["invalid"]],
                         ids=lambda x: x if isinstance(x, str) else x["name"])
def test_invalid_messages_raise_their_listed_code(message, vec):
    assert vec["code"] in MODULES[message].ERRORS
    with pytest.raises((PeerProtocolError, cosign.CosignError, ValueError)) as info:
        _decode(message, vec)
    code = getattr(info.value, "code", None) or str(info.value)
    assert code == vec["code"]


def test_sizes_are_bounded_before_parsing():
    with pytest.raises(PeerProtocolError) as info:
        frontier.decode(b" " * (frontier.FRONTIER_BYTES_MAX + 1))
    assert info.value.code == "oversized"
    with pytest.raises(PeerProtocolError) as info:
        entries.decode(b" " * (entries.body_bytes_max(2) + 1), 2)
    assert info.value.code == "oversized"
    with pytest.raises(PeerProtocolError) as info:
        proof.decode(b" " * (proof.PROOF_BYTES_MAX + 1))
    assert info.value.code == "oversized"


DEEP = b"[" * 2000 + b"]" * 2000  # nested past json's recursion limit, within every message's size bound


def test_json_nested_past_the_parsers_recursion_gets_the_messages_code():
    for module in (frontier, proof):
        with pytest.raises(PeerProtocolError) as e:
            module.decode(DEEP)
        assert e.value.code == "bad_encoding"
    with pytest.raises(cosign.CosignError) as e:
        cosign.decode(DEEP)
    assert e.value.code == "malformed_note"
    assert notify.decode(DEEP) is None  # a notification that does not parse carries no digest
