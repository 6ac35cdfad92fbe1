"""Hypothesis strategies for hostile request bodies, shared by the fuzz tier (tests/unit,
tests/integration) and scripts/fuzz_node.py. Pure: ledger and hypothesis only.

CBOR is built head by head so it can lie (tags, shared references 28/29, indefinite lengths, floats,
lengths past the end, deep nests); JSON documents nest deeply, hold big integers at the range
edges, and put wrong types where envelopes and estimates expect others.
"""

from __future__ import annotations

import base64
import json
import os
import time
from typing import Any

from hypothesis import strategies as st

from ledger import encoding
from ledger.constants import AMOUNT_MAX, TIME_MS_MAX
from ledger.events import make_envelope_bytes
from ledger.signing import sign


def head(major: int, arg: int) -> bytes:
    return encoding._head(major, arg)


def shared_ref_bomb(levels: int) -> bytes:
    body = head(4, levels + 1) + b"\xd8\x1c\x82\x00\x00"
    for i in range(1, levels + 1):
        ref = b"\xd8\x1d" + head(0, i - 1)
        body += b"\xd8\x1c\x82" + ref + ref
    return body


ints = st.one_of(st.integers(-(2**64), 2**64 - 1),
                 st.sampled_from([0, 23, 24, 255, 256, 2**32, 2**63 - 1, 2**63, 2**64 - 1, -(2**63), -(2**64)]))
plain = st.recursive(
    st.one_of(ints, st.binary(max_size=40), st.text(max_size=20), st.booleans(), st.none()),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=30,
)


def depth(value) -> int:
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


@st.composite
def hostile_item(draw, level=0):
    """Raw CBOR built head by head: tags, indefinite lengths, floats, lies about lengths, deep nests."""
    choice = draw(st.integers(0, 11 if level < 12 else 4))
    if choice == 0:
        return head(0, draw(ints.filter(lambda i: 0 <= i < 2**64)))
    if choice == 1:
        return head(1, draw(st.integers(0, 2**64 - 1)))
    if choice == 2:
        raw = draw(st.binary(max_size=16))
        declared = draw(st.one_of(st.just(len(raw)), st.integers(0, 2**64 - 1)))
        return head(draw(st.sampled_from([2, 3])), declared) + raw
    if choice == 3:
        return draw(st.sampled_from([b"\xf4", b"\xf5", b"\xf6", b"\xf7", b"\xf9\x3c\x00", b"\xfa\x00\x00\x00\x00",
                                     b"\xfb" + bytes(8), b"\xff", b"\x1c", b"\xf8\x20"]))
    if choice == 4:
        return draw(st.binary(max_size=6))
    if choice in (5, 6):
        parts = draw(st.lists(hostile_item(level + 1), max_size=4))
        declared = draw(st.one_of(st.just(len(parts)), st.integers(0, 2**40)))
        return head(4, declared) + b"".join(parts)
    if choice == 7:
        parts = draw(st.lists(hostile_item(level + 1), max_size=6))
        return head(5, len(parts) // 2) + b"".join(parts)
    if choice == 8:  # indefinite containers
        parts = draw(st.lists(hostile_item(level + 1), max_size=3))
        return draw(st.sampled_from([b"\x9f", b"\xbf", b"\x5f", b"\x7f"])) + b"".join(parts) + b"\xff"
    if choice == 9:  # tags: shared references and anything else
        tag = draw(st.one_of(st.sampled_from([28, 29, 0, 1, 2, 3, 24, 55799]), st.integers(0, 2**64 - 1)))
        return head(6, tag) + draw(hostile_item(level + 1))
    if choice == 10:
        return b"\x81" * draw(st.integers(0, 40)) + draw(hostile_item(level + 1))
    return shared_ref_bomb(draw(st.integers(1, 30)))



EDGE_INTS = st.sampled_from([0, 1, AMOUNT_MAX - 1, AMOUNT_MAX, AMOUNT_MAX + 1, TIME_MS_MAX, TIME_MS_MAX + 1, 2**62,
                             2**63 - 1, 2**63, 2**64 - 1, 2**64, -1, -(2**63), -(2**63) - 1, 10**400])
json_scalar = st.one_of(st.none(), st.booleans(), EDGE_INTS, st.integers(), st.floats(allow_nan=False),
                        st.text(max_size=30))
json_value = st.recursive(json_scalar, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)), max_leaves=20)


@st.composite
def json_body(draw: Any) -> bytes:
    """A JSON request body: an envelope, a batch, an estimate or anything, maybe nested past any parser."""
    shape = draw(st.integers(0, 6))
    if shape == 0:
        doc: Any = {"event": draw(st.one_of(st.text(max_size=40), json_value)), "sig": draw(json_scalar)}
    elif shape == 1:
        doc = {"events": draw(st.lists(json_value, max_size=5))}
    elif shape == 2:
        body = draw(st.dictionaries(st.sampled_from(["op", "cost", "units", "tokens", "run", "timeout", "tools", "x"]),
                                    json_value, max_size=5))
        doc = {"agent": draw(st.one_of(st.just("ab" * 32), st.text(max_size=70))),
               "kind": draw(st.one_of(st.sampled_from(["act", "run.reserve", "dat", "nope"]), json_scalar)), "body": body}
    elif shape == 3:
        n = draw(st.integers(900, 200_000))
        return b"[" * n + b"]" * n
    elif shape == 4:
        return draw(st.binary(max_size=64))
    else:
        doc = draw(json_value)
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    # UTF-8 (lone surrogates passed through, so not always valid UTF-8), or another encoding outright
    return _encode(text, draw(st.sampled_from(["utf-8", "utf-8", "utf-16", "latin-1"])))


def _encode(text: str, codec: str) -> bytes:
    try:
        return text.encode(codec, "surrogatepass")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


BODY_KEYS = {"act": ["op", "cost", "units"], "dat": ["src", "dst", "read", "written", "dur"],
             "cpt": ["node", "cpu", "gpu", "mem", "jobs"], "trt": ["subject", "type", "value", "halflife"],
             "run.reserve": ["run", "op", "tokens", "timeout", "cost"], "stake.set": ["agent", "amount"]}
_SENSIBLE = {"op": "llm.call", "src": bytes(32), "dst": bytes(32), "node": "n", "subject": bytes(32), "type": "feedback",
             "run": bytes(16), "agent": bytes(32)}


@st.composite
def signed_envelope(draw: Any, public_key: bytes, seed: bytes) -> bytes:
    """A correctly signed envelope whose body mixes sensible values, integers at the range edges and wrong types."""
    kind = draw(st.sampled_from(sorted(BODY_KEYS)))
    cbor_ints = EDGE_INTS.filter(lambda v: -(2**64) <= v < 2**64)
    odd = st.one_of(cbor_ints, st.integers(0, 2**64 - 1), st.binary(max_size=33), st.text(max_size=5), st.just(0))
    body = {k: _SENSIBLE[k] if k in _SENSIBLE and draw(st.booleans()) else draw(odd) for k in BODY_KEYS[kind]}
    ts = int(time.time() * 1000) if draw(st.booleans()) else draw(cbor_ints.filter(lambda v: v >= 0))
    raw = encoding.encode({"v": 1, "kind": kind, "signer": public_key, "ts": ts, "nonce": os.urandom(16), "body": body})
    return make_envelope_bytes(raw, sign(raw, seed))


# The JSON endpoints beyond events, each with a valid body to mutate one field of (tests/integration/
# test_fuzz_gateway.py, scripts/fuzz_node.py): the LLM gateway's two dialects, the task meter, peers.
JSON_POST_BASES: dict[str, dict[str, Any]] = {
    "/llm/v1/chat/completions": {"model": "test-model", "messages": [{"role": "user", "content": "hi"}],
                                 "max_tokens": 5, "stream": False},
    "/llm/v1/embeddings": {"model": "test-embed", "input": "hi"},
    "/llm/v1/messages": {"model": "claude-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
    "/v1/tasks": {"estimate": "1T", "timeout_ms": 1000, "host": "h"},
    "/v1/tasks/00112233445566778899aabbccddeeff": {"cpu_ms": 1, "mem_mb": 1, "jobs": 1, "read": 1, "written": 1,
                                                  "dur_ms": 1},
    "/v1/peer/cosign": {"origin": "00" * 32, "size": 1, "note": "x", "cosignature": "y"},
    "/v1/peer/notify": {"digest": "00" * 32},
    "/v1/peer/escrow/ask": {"metric": "events", "amount": 1, "scope": "agent", "id": "00" * 32},
}
JSON_POST_EXTRA = ("n", "temperature", "tools", "system", "dimensions", "stream")  # fields some dialects read

# One part of a bearer token (header, claims, signature) replaced by hostile bytes: JSON of any
# shape, garbage, or arrays nested past the JSON parser's recursion within the token's bound.
token_part = st.tuples(st.integers(0, 2), st.one_of(json_value.map(lambda v: json.dumps(v).encode()),
                                                    st.binary(max_size=64), st.integers(100, 3000).map(lambda n: b"[" * n)))


def with_token_part(token: str, part: int, raw: bytes) -> str:
    """token with its part-th base64url part replaced by raw's encoding."""
    parts = token.split(".")
    parts[part] = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
    return ".".join(parts)
