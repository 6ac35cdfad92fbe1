"""Event and envelope parsing: every schema rule, and the kind registry."""

from dataclasses import dataclass
from typing import ClassVar

import pytest

from ledger import encoding
from ledger.errors import LedgerError
from ledger.events import (
    KINDS,
    Body,
    envelope_from_parts,
    make_envelope_bytes,
    parse_envelope,
    parse_event,
    spec,
    _uint,
)
from ledger.kinds import REGISTRY, Kind, Registry
from ledger.signing import public_key_from_seed, sign, verify

SEED = bytes(range(32))
PK = public_key_from_seed(SEED)
TS = 1_764_000_000_000
NONCE = bytes(16)

GOOD_BODIES = {
    "act": {"op": "llm.call", "cost": 3200, "units": 1500, "result": bytes(32)},
    "dat": {"src": bytes(32), "dst": b"\x01" * 32, "read": 10, "written": 20, "dur": 5},
    "cpt": {"node": "gpu-01", "cpu": 4, "gpu": 1, "mem": 2048, "jobs": 2},
    "trt": {"subject": b"\x02" * 32, "type": "accuracy", "value": -250, "halflife": 86400},
}


def event_map(body_kind="act", **over):
    m = {"v": 1, "kind": body_kind, "signer": PK, "ts": TS, "nonce": NONCE, "body": GOOD_BODIES[body_kind]}
    m.update(over)
    return m


def code_of(raw: bytes) -> str:
    with pytest.raises(LedgerError) as e:
        parse_event(raw)
    return e.value.code


@pytest.mark.parametrize("kind", sorted(GOOD_BODIES))
def test_each_metering_kind_parses_and_signs(kind):
    raw = encoding.encode(event_map(kind))
    ev = parse_event(raw)
    assert ev.kind == kind and ev.signer == PK and ev.ts == TS
    env = parse_envelope(make_envelope_bytes(raw, sign(raw, SEED)))
    verify(env.event.raw, env.sig, env.event.signer)
    assert env.event.id == ev.id


def test_optional_act_fields_may_be_left_out():
    ev = parse_event(encoding.encode(event_map(body={"op": "agent.run", "cost": 0})))
    assert ev.body.units is None and ev.body.metrics() == (0, 0)


@pytest.mark.parametrize(
    "over, code",
    [
        ({"v": 2}, "unsupported_version"),
        ({"kind": "nope"}, "unknown_kind"),
        ({"kind": 7}, "invalid_event"),
        ({"signer": b"\x00" * 31}, "invalid_event"),
        ({"ts": -1}, "invalid_event"),
        ({"ts": "now"}, "invalid_event"),
        ({"nonce": b"\x00" * 15}, "invalid_event"),
        ({"extra": 1}, "unknown_field"),
        ({"body": []}, "invalid_body"),
        ({"body": {"op": "LLM", "cost": 1}}, "invalid_body"),
        ({"body": {"op": "x" * 65, "cost": 1}}, "invalid_body"),
        ({"body": {"op": "", "cost": 1}}, "invalid_body"),
        ({"body": {"op": "a", "cost": -1}}, "invalid_body"),
        ({"body": {"op": "a"}}, "invalid_body"),
        ({"body": {"op": "a", "cost": 1, "colour": "red"}}, "unknown_field"),
        ({"body": {"op": "a", "cost": 1, "result": b"short"}}, "invalid_body"),
        ({"body": {"op": "a", "cost": True}}, "invalid_body"),
    ],
)
def test_bad_events_get_their_code(over, code):
    assert code_of(encoding.encode(event_map(**over))) == code


def test_missing_event_key_is_invalid():
    m = event_map()
    del m["nonce"]
    assert code_of(encoding.encode(m)) == "invalid_event"


def test_trt_type_and_cpt_node_are_checked():
    assert code_of(encoding.encode(event_map("trt", body={**GOOD_BODIES["trt"], "type": "vibes"}))) == "invalid_body"
    assert code_of(encoding.encode(event_map("cpt", body={**GOOD_BODIES["cpt"], "node": "n" * 65}))) == "invalid_body"


def test_oversized_event_is_too_large():
    raw = encoding.encode(event_map(body={"op": "a", "cost": 1, "result": bytes(32)})) + b"\x00" * 5000
    assert code_of(raw) == "event_too_large"


def test_envelope_must_be_canonical_and_complete():
    raw = encoding.encode(event_map())
    sig = sign(raw, SEED)
    with pytest.raises(LedgerError) as e:
        parse_envelope(encoding.encode({"event": raw}))
    assert e.value.code == "malformed_envelope"
    with pytest.raises(LedgerError) as e:
        parse_envelope(encoding.encode({"event": raw, "sig": sig, "x": 1}))
    assert e.value.code == "unknown_field"
    with pytest.raises(LedgerError) as e:
        envelope_from_parts(raw, sig[:63])
    assert e.value.code == "malformed_envelope"
    # canonical order is "sig" (0x63…) before "event" (0x65…): the other order is refused
    assert make_envelope_bytes(raw, sig).startswith(b"\xa2" + encoding.encode("sig"))
    with pytest.raises(LedgerError) as e:
        parse_envelope(b"\xa2" + encoding.encode("event") + encoding.encode(raw) + encoding.encode("sig") + encoding.encode(sig))
    assert e.value.code == "not_canonical"


def test_bad_signature_is_rejected():
    raw = encoding.encode(event_map())
    sig = bytearray(sign(raw, SEED))
    sig[0] ^= 1
    with pytest.raises(LedgerError) as e:
        verify(raw, bytes(sig), PK)
    assert e.value.code == "bad_signature"


def test_a_new_kind_plugs_in_through_the_registry():
    @dataclass(frozen=True)
    class StakeBody(Body):
        KIND: ClassVar[str] = "test.stake"
        METRICS: ClassVar[tuple[str, ...]] = ("amount",)
        amount: int = spec(_uint)

    stake = Kind(StakeBody, "oracle", "3.2")
    kinds = Registry(REGISTRY.kinds + (stake,)).bodies
    ev = parse_event(encoding.encode(event_map(body={"amount": 5}) | {"kind": "test.stake"}), kinds=kinds)
    assert ev.body.amount == 5
    with pytest.raises(ValueError):
        Registry(REGISTRY.kinds + (stake, stake))
    assert "test.stake" not in KINDS  # the node's own table is static
