"""Deterministic CBOR (RFC 8949 §4.2.1): encoding, and rejection of every non-canonical form."""

import cbor2
import pytest
from hypothesis import given, strategies as st

from ledger.encoding import decode_canonical, encode
from ledger.errors import Malformed

values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**64), 2**64 - 1) | st.binary(max_size=40) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8) | st.integers(-1000, 1000), children, max_size=5),
    max_leaves=20,
)


@given(values)
def test_encode_then_decode_canonical_round_trips(value):
    data = encode(value)
    assert decode_canonical(data) == value
    # cbor2 (an independent decoder) reads the same value
    assert cbor2.loads(data) == value


@pytest.mark.parametrize(
    "value, hex_",
    [
        (0, "00"), (23, "17"), (24, "1818"), (255, "18ff"), (256, "190100"), (65536, "1a00010000"),
        (2**32, "1b0000000100000000"), (-1, "20"), (-25, "3818"), (b"", "40"), ("a", "6161"),
        ([1, [2, 3]], "820182020 3".replace(" ", "")), (True, "f5"), (None, "f6"),
        # bytewise key order: 10 (0x0a) < 100 (0x1864) < -1 (0x20) < "z" (0x617a) < "aa" (0x626161)
        ({"aa": 0, "z": 0, -1: 0, 100: 0, 10: 0}, "a50a00186400200061 7a00626161 00".replace(" ", "")),
    ],
)
def test_encode_matches_rfc8949_examples(value, hex_):
    assert encode(value).hex() == hex_


@pytest.mark.parametrize(
    "hex_, why",
    [
        ("1817", "23 in a one-byte argument"),
        ("190017", "23 in a two-byte argument"),
        ("5f4101ff", "indefinite-length byte string"),
        ("9f01ff", "indefinite-length array"),
        ("bf616101ff", "indefinite-length map"),
        ("a2616201616101", "keys out of order"),
        ("a2616101616102", "duplicate keys"),
        ("0000", "trailing bytes"),
        ("a2016161 6161 01".replace(" ", ""), "int key after text key in wrong order? (valid)"),
    ],
)
def test_non_canonical_bytes_are_rejected(hex_, why):
    data = bytes.fromhex(hex_)
    if why.endswith("(valid)"):
        # 0x01 < 0x61: an int key before a text key is the canonical order
        assert encode(decode_canonical(data)) == data
        return
    with pytest.raises(Malformed) as e:
        decode_canonical(data)
    assert e.value.code == "not_canonical", why


@pytest.mark.parametrize(
    "hex_", ["fb3ff0000000000000", "f93c00", "f7", "ff", "", "5a00000010"]
)
def test_floats_and_garbage_are_malformed(hex_):
    with pytest.raises(Malformed) as e:
        decode_canonical(bytes.fromhex(hex_))
    assert e.value.code == "malformed_cbor"


def test_tags_are_refused_with_their_own_code():
    with pytest.raises(Malformed) as e:
        decode_canonical(bytes.fromhex("c11a514b67b0"))
    assert e.value.code == "cbor_tag"


def test_deep_nesting_is_rejected_not_crashing():
    with pytest.raises(Malformed):
        decode_canonical(b"\x81" * 100_000 + b"\x00")


def test_encode_refuses_floats():
    with pytest.raises(Malformed):
        encode({"a": 1.5})
