"""Deterministic CBOR, RFC 8949 §4.2.1 "core deterministic encoding".

`encode(value)` writes the one deterministic encoding of a value built from
int, bytes, str, list, dict, bool and None: shortest argument forms, definite
lengths, map keys sorted by the bytewise order of their own encodings, no
duplicate keys. Floats and tags are refused: signed data holds neither
(PROTOCOL.md §2).

`decode_canonical(data)` decodes and then re-encodes: if the bytes differ, the
input was not deterministic (indefinite lengths, long forms, unsorted or
duplicate keys, trailing bytes) and `not_canonical` is raised, so one event has
exactly one id. Decoding uses cbor2 (C, depth-limited); the caller bounds the
size before calling (P6).

Untrusted CBOR is bounded in what it expands to, not only in bytes
(PROTOCOL.md §2). cbor2 honours shared references (tags 28/29, so 185 bytes can
name a 2^20-leaf tree, or a cycle), so every decode first runs `scan`: a walk
over the item heads alone, building no objects, that refuses any tag, floats,
simple values other than false/true/null, indefinite lengths, reserved heads,
lengths larger than the bytes left, nesting deeper than `DEPTH_MAX`
containers and more than `items_max` items. What passes decodes to at most one
Python object per input byte.

cbor2's own `canonical=True` sorts keys length-first (RFC 7049 §3.9), which
differs from RFC 8949 bytewise order for mixed key types, hence this encoder.
"""

from __future__ import annotations

import struct
from typing import Any, NoReturn

import cbor2

from ledger.errors import Malformed

_UINT64_MAX = 2**64 - 1

# Arrays and maps nested, at most: the contract's deepest structure is an event map → its
# body → gov.propose `changes` → `budgets` (or `stake_tiers`, `bursts`) → one kind's fields
# (a tier row, a burst): 5 (ledger/governance.py's grammar). A batch is an array of envelope
# maps: 2. A new kind that needs more raises this bound and says so in docs/protocol.md §2.
DEPTH_MAX = 5


def _scan_fail(code: str, message: str, pos: int) -> Malformed:
    return Malformed(code, f"{message} (at byte {pos})")


def scan(data: bytes, start: int = 0, *, depth_max: int = DEPTH_MAX, items_max: int | None = None) -> int:
    """Check the one CBOR item at data[start:] without decoding it; returns the offset just past it.

    Raises Malformed: `cbor_tag` for any tag (shared references 28/29 included),
    `cbor_too_deep` past depth_max nested arrays and maps, `cbor_too_many_items`
    past items_max items, `not_canonical` for an indefinite length, and
    `malformed_cbor` for floats, other simple values, reserved heads, and
    lengths that run past the end of data.
    """
    n = len(data)
    pos = start
    items = 0
    limit = n - start if items_max is None else items_max
    left = [1]  # items still expected in each open container (the outermost: the one item)
    while left:
        if left[-1] == 0:
            left.pop()
            continue
        left[-1] -= 1
        if pos >= n:
            raise _scan_fail("malformed_cbor", "CBOR ends in the middle of an item", pos)
        head = data[pos]
        major, info = head >> 5, head & 0x1F
        items += 1
        if items > limit:
            raise _scan_fail("cbor_too_many_items", f"CBOR holds more than {limit} items", pos)
        pos += 1
        if info < 24:
            arg = info
        elif info < 28:
            width = 1 << (info - 24)
            if pos + width > n:
                raise _scan_fail("malformed_cbor", "CBOR ends in the middle of an item head", pos)
            arg = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        else:
            _scan_bad_head(major, info, pos)
        if major <= 1:
            continue
        if major <= 3:  # byte and text strings
            if arg > n - pos:
                raise _scan_fail("malformed_cbor", f"CBOR string of {arg} bytes runs past the end", pos)
            pos += arg
        elif major <= 5:  # arrays and maps: every element takes at least one byte
            count = arg if major == 4 else 2 * arg
            if count > n - pos:
                raise _scan_fail("malformed_cbor", f"CBOR container of {arg} elements runs past the end", pos)
            if len(left) > depth_max:
                raise _scan_fail("cbor_too_deep", f"CBOR nests deeper than {depth_max} arrays and maps", pos - 1)
            left.append(count)
        elif major == 6:
            raise _scan_fail("cbor_tag", f"CBOR tags are not allowed (tag {arg}; PROTOCOL.md §2)", pos - 1)
        elif info not in (20, 21, 22):  # false, true, null
            _scan_bad_simple(info, pos - 1)
    return pos


def _scan_bad_head(major: int, info: int, pos: int) -> NoReturn:
    """An item head whose info is 28..31 (pos: just past the head byte): reserved, or indefinite."""
    if info == 31:
        if major in (2, 3, 4, 5):
            raise _scan_fail("not_canonical", "indefinite lengths are not allowed (RFC 8949 §4.2.1)", pos - 1)
        raise _scan_fail("malformed_cbor", "unexpected CBOR break or indefinite head", pos - 1)
    raise _scan_fail("malformed_cbor", "reserved CBOR head", pos - 1)


def _scan_bad_simple(info: int, pos: int) -> NoReturn:
    """Major type 7 other than false, true and null: a float or another simple value."""
    if info in (25, 26, 27):
        raise _scan_fail("malformed_cbor", "floating-point numbers are not allowed", pos)
    raise _scan_fail("malformed_cbor", "CBOR simple values other than false, true, null are not allowed", pos)


def _head(major: int, arg: int) -> bytes:
    # RFC 8949 §4.2.1: the argument in its shortest form.
    mt = major << 5
    if arg < 24:
        return bytes((mt | arg,))
    if arg < 0x100:
        return bytes((mt | 24, arg))
    if arg < 0x10000:
        return struct.pack(">BH", mt | 25, arg)
    if arg < 0x100000000:
        return struct.pack(">BI", mt | 26, arg)
    return struct.pack(">BQ", mt | 27, arg)


def _encode_into(value: Any, out: list[bytes]) -> None:
    t = type(value)
    if t is str:
        raw = value.encode("utf-8")
        out.append(_head(3, len(raw)))
        out.append(raw)
    elif t is bytes:
        out.append(_head(2, len(value)))
        out.append(value)
    elif t is int:
        if value >= 0:
            if value > _UINT64_MAX:
                raise Malformed("malformed_cbor", "integer out of 64-bit range")
            out.append(_head(0, value))
        else:
            if -1 - value > _UINT64_MAX:
                raise Malformed("malformed_cbor", "integer out of 64-bit range")
            out.append(_head(1, -1 - value))
    elif t is dict:
        items = []
        for k, v in value.items():
            key_bytes = encode(k)
            items.append((key_bytes, v))
        items.sort(key=lambda kv: kv[0])
        out.append(_head(5, len(items)))
        previous = None
        for key_bytes, v in items:
            if key_bytes == previous:
                raise Malformed("not_canonical", "duplicate map key")
            previous = key_bytes
            out.append(key_bytes)
            _encode_into(v, out)
    elif t is list or t is tuple:
        out.append(_head(4, len(value)))
        for item in value:
            _encode_into(item, out)
    elif value is True:
        out.append(b"\xf5")
    elif value is False:
        out.append(b"\xf4")
    elif value is None:
        out.append(b"\xf6")
    else:
        # Floats, tags, undefined and simple values have no place in signed data.
        raise Malformed("malformed_cbor", f"type {t.__name__} is not allowed in signed data")


def encode(value: Any) -> bytes:
    """The RFC 8949 §4.2.1 deterministic encoding of value; raises Malformed."""
    out: list[bytes] = []
    _encode_into(value, out)
    return b"".join(out)


def decode(data: bytes, *, depth_max: int = DEPTH_MAX, items_max: int | None = None) -> Any:
    """Decode one bounded CBOR item (see `scan`) filling all of data; raises Malformed."""
    end = scan(data, depth_max=depth_max, items_max=items_max)
    if end != len(data):
        raise Malformed("not_canonical", f"{len(data) - end} bytes follow the CBOR item")
    try:
        return cbor2.loads(data)
    except (cbor2.CBORDecodeError, ValueError, TypeError, OverflowError, RecursionError) as e:
        raise Malformed("malformed_cbor", f"CBOR does not decode: {e}") from None
    except Exception as e:  # cbor2 can raise odd types on hostile input
        raise Malformed("malformed_cbor", f"CBOR does not decode: {type(e).__name__}") from None


_PLAIN = (int, bytes, str, bool, type(None))


def _text_keys_only(value: Any) -> bool:
    """True if value is plain data (no floats, tags, …) whose maps all have text keys."""
    t = type(value)
    if t is dict:
        return all(type(k) is str and _text_keys_only(v) for k, v in value.items())
    if t is list:
        return all(_text_keys_only(v) for v in value)
    return t in _PLAIN


def decode_canonical(data: bytes) -> Any:
    """Decode data and require it to be exactly its deterministic encoding.

    Raises Malformed("malformed_cbor") if it does not decode or holds a float
    or tag, Malformed("not_canonical") if it is not deterministic.
    """
    value = decode(data)
    # Fast path: when every map key is text, length-first order (cbor2's
    # canonical mode, in C) and bytewise order coincide, because a text key's
    # head byte grows with its length. Anything else takes the exact encoder.
    if _text_keys_only(value):
        try:
            if cbor2.dumps(value, canonical=True) == data:
                return value
        except (cbor2.CBOREncodeError, ValueError, OverflowError):
            pass
    if encode(value) != data:
        raise Malformed(
            "not_canonical",
            "bytes are not the RFC 8949 §4.2.1 deterministic encoding of their value",
        )
    return value
