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

cbor2's own `canonical=True` sorts keys length-first (RFC 7049 §3.9), which
differs from RFC 8949 bytewise order for mixed key types, hence this encoder.
"""

from __future__ import annotations

import struct
from typing import Any

import cbor2

from ledger.errors import Malformed

_UINT64_MAX = 2**64 - 1


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


def decode(data: bytes) -> Any:
    """Decode one CBOR item; raises Malformed("malformed_cbor") on any error."""
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
