"""Untrusted CBOR is bounded in what it expands to (PROTOCOL.md §2), and amounts in what they add up to.

Hypothesis drives the pure decoders with hostile CBOR (shared references, other tags, deep nesting,
indefinite lengths, floats, lengths past the end, big integers at the range edges, wrong types): every
input is either decoded or refused with a Malformed/Invalid code, never another exception, and fast.
"""

import struct
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ledger import encoding
from ledger.constants import AMOUNT_MAX, COUNTER_MAX, TIME_MS_MAX
from ledger.errors import Invalid, LedgerError, Malformed, TooLarge
from ledger.events import make_envelope_bytes, parse_envelope, parse_event
from tests.fuzzkit import depth, hostile_item, ints, plain, shared_ref_bomb

SIGNER = bytes(range(32))
FAST = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])


# -- named cases ---------------------------------------------------------------------------


def test_shared_reference_bomb_is_refused_at_the_first_tag_in_microseconds():
    bomb = shared_ref_bomb(40)  # 2^40 leaves once expanded
    started = time.perf_counter()
    with pytest.raises(Malformed) as e:
        encoding.decode_canonical(bomb)
    assert e.value.code == "cbor_tag"
    assert time.perf_counter() - started < 0.01


@pytest.mark.parametrize("data", [b"\xd8\x1c\x81\xd8\x1d\x00", b"\xd8\x1d\x00", b"\xc1\x00", b"\xd9\xd9\xf7\x00"],
                         ids=["cycle", "dangling-ref", "epoch-time", "self-describe"])
def test_every_tag_is_refused(data):
    with pytest.raises(Malformed) as e:
        encoding.decode(data)
    assert e.value.code == "cbor_tag"


def test_nesting_up_to_depth_max_decodes_and_one_more_is_refused():
    ok = b"\x81" * encoding.DEPTH_MAX + b"\x00"
    assert encoding.scan(ok) == len(ok)
    with pytest.raises(Malformed) as e:
        encoding.decode(b"\x81" + ok)
    assert e.value.code == "cbor_too_deep"
    with pytest.raises(Malformed) as e:
        encoding.decode(b"\x81" * 1_000_000 + b"\x00")  # refused at the first level past the bound, not after a megabyte
    assert e.value.code == "cbor_too_deep"


@pytest.mark.parametrize("data, code", [
    (b"\x9f\x00\xff", "not_canonical"),  # indefinite array
    (b"\x5f\x41\x00\xff", "not_canonical"),  # indefinite bytes
    (b"\xbf\xff", "not_canonical"),  # indefinite map
    (b"\xff", "malformed_cbor"),  # a lone break
    (b"\x1c", "malformed_cbor"),  # reserved head
    (b"\x5b" + struct.pack(">Q", 2**64 - 1), "malformed_cbor"),  # 2^64-byte string, 9 bytes sent
    (b"\x9b" + struct.pack(">Q", 2**40), "malformed_cbor"),  # a trillion-element array, 9 bytes sent
    (b"\xbb" + struct.pack(">Q", 2**63), "malformed_cbor"),
    (b"\xf9\x3c\x00", "malformed_cbor"),  # half float
    (b"\xfb" + struct.pack(">d", 1.5), "malformed_cbor"),
    (b"\xf7", "malformed_cbor"),  # undefined
    (b"\xf8\x20", "malformed_cbor"),  # simple(32)
    (b"\x82\x00", "malformed_cbor"),  # truncated
    (b"\x00\x00", "not_canonical"),  # trailing bytes
])
def test_heads_that_could_cost_more_than_their_bytes_are_refused(data, code):
    with pytest.raises(Malformed) as e:
        encoding.decode(data)
    assert e.value.code == code


def test_items_max_bounds_a_wide_structure():
    data = encoding.encode(list(range(100)))
    assert encoding.scan(data, items_max=101) == len(data)
    with pytest.raises(Malformed) as e:
        encoding.scan(data, items_max=100)
    assert e.value.code == "cbor_too_many_items"


def test_scan_returns_the_end_of_one_item_in_a_sequence():
    a, b = encoding.encode({"x": [1, b"yz"]}), encoding.encode("next")
    assert encoding.scan(a + b) == len(a)
    assert encoding.scan(a + b, len(a)) == len(a + b)


# -- properties: plain data round-trips through the scan --------------------------------------

@FAST
@given(plain)
def test_plain_data_within_the_depth_bound_round_trips(value):
    data = encoding.encode(value)
    if depth(value) <= encoding.DEPTH_MAX:
        assert encoding.scan(data) == len(data)
        assert encoding.decode_canonical(data) == value
    else:
        with pytest.raises(Malformed) as e:
            encoding.decode_canonical(data)
        assert e.value.code == "cbor_too_deep"


# -- properties: hostile CBOR is decoded or refused with a code, never anything else -----------


@FAST
@given(hostile_item())
def test_hostile_cbor_is_decoded_or_refused_with_a_code(data):
    started = time.perf_counter()
    try:
        value = encoding.decode_canonical(data)
    except Malformed as e:
        assert e.code in ("malformed_cbor", "not_canonical", "cbor_tag", "cbor_too_deep", "cbor_too_many_items")
    else:
        assert encoding.encode(value) == data and depth(value) <= encoding.DEPTH_MAX
    assert time.perf_counter() - started < 0.05


@FAST
@given(st.binary(max_size=300))
def test_random_bytes_as_an_envelope_are_refused_with_a_code(data):
    with pytest.raises(LedgerError) as e:
        parse_envelope(data)
    assert isinstance(e.value, (Malformed, Invalid, TooLarge))


# -- properties: amounts at the range edges -----------------------------------------------------

edges = st.one_of(
    st.sampled_from([0, 1, AMOUNT_MAX - 1, AMOUNT_MAX, AMOUNT_MAX + 1, 2**62, 2**63 - 1, 2**63, 2**64 - 1]),
    st.integers(0, 2**64 - 1),
)
METERED = {
    "act": ({"op": "llm.call", "cost": 1, "units": 1}, ("cost", "units")),
    "dat": ({"src": bytes(32), "dst": bytes(32), "read": 1, "written": 1, "dur": 1}, ("read", "written", "dur")),
    "cpt": ({"node": "n", "cpu": 1, "gpu": 1, "mem": 1, "jobs": 1}, ("cpu", "gpu", "mem", "jobs")),
    "trt": ({"subject": bytes(32), "type": "feedback", "value": 1, "halflife": 1}, ("halflife",)),
}


def event_bytes(kind: str, body: dict, ts: int = 1_700_000_000_000) -> bytes:
    return encoding.encode({"v": 1, "kind": kind, "signer": SIGNER, "ts": ts, "nonce": bytes(16), "body": body})


@FAST
@given(st.sampled_from(sorted(METERED)), st.data(), edges)
def test_every_amount_is_accepted_up_to_its_bound_and_refused_past_it(kind, data, amount):
    body, fields = METERED[kind]
    name = data.draw(st.sampled_from(fields))
    raw = event_bytes(kind, {**body, name: amount})
    if amount <= AMOUNT_MAX:
        assert getattr(parse_event(raw).body, name) == amount
    else:
        with pytest.raises(Invalid) as e:
            parse_event(raw)
        assert e.value.code == "amount_out_of_range"


@FAST
@given(st.integers(-(2**64), 2**64 - 1))
def test_a_trust_value_is_bounded_on_both_sides(value):
    raw = event_bytes("trt", {**METERED["trt"][0], "value": value})
    if -AMOUNT_MAX <= value <= AMOUNT_MAX:
        assert parse_event(raw).body.value == value
    else:
        with pytest.raises(Invalid) as e:
            parse_event(raw)
        assert e.value.code == "amount_out_of_range"


@FAST
@given(edges)
def test_timestamps_past_the_last_instant_are_refused(ts):
    raw = event_bytes("act", METERED["act"][0], ts=ts)
    if ts <= TIME_MS_MAX:
        assert parse_event(raw).ts == ts
    else:
        with pytest.raises(Invalid) as e:
            parse_event(raw)
        assert e.value.code == "amount_out_of_range"


@FAST
@given(st.sampled_from(["1", "1.5", "x", "", b"\x00", [], {}, True, None, -1]))
def test_wrong_types_for_an_amount_are_invalid_body(value):
    with pytest.raises(Invalid) as e:
        parse_event(event_bytes("act", {"op": "a", "cost": value}))
    assert e.value.code == "invalid_body"


def test_the_bounds_keep_every_sum_in_int64():
    # the relationships ledger.constants asserts at import, restated where a reader looks for them
    assert 2 * AMOUNT_MAX < COUNTER_MAX and 2 * COUNTER_MAX <= 2**63 - 1
    envelope = make_envelope_bytes(event_bytes("act", {"op": "a", "cost": AMOUNT_MAX}), bytes(64))
    assert parse_envelope(envelope).event.body.cost == AMOUNT_MAX
