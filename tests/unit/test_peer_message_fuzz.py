"""Every peer message decoder against hostile bytes (hypothesis, in-process, ~2 s).

A decoder (consensus/peermsg/*, consensus/escrow_messages.py) gets untrusted bytes from a peer that
may be hostile: it returns a value or raises its own error with one of its listed codes (`ERRORS`,
`ERROR_CODES`), never anything else (a TypeError, KeyError, RecursionError ... would escape the
node's peer handling as a bug). The bytes are hostile JSON bodies and values (tests/fuzzkit.py),
hostile CBOR items (for the entries page, whose body is CBOR), valid messages with one field
replaced, and random bytes.
"""

from __future__ import annotations

import json

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consensus import escrow_messages
from consensus.peermsg import cosign, entries, frontier, notify, proof
from consensus.verify import PeerProtocolError
from ledger.errors import LedgerError
from tests.fuzzkit import hostile_item, json_body, json_value

FAST = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# valid documents of each JSON message, to replace one field of (the vectors hold more)
VALID = {
    "frontier": {"origins": [], "peers": [], "forks": [], "digest": "00" * 32},
    "proof": {"proof": ["00" * 32]},
    "cosign": {"size": 1, "line": "\u2014 witness AAAA\n"},
    "notify": {"digest": "00" * 32},
    "ask": {"metric": "events", "amount": 1, "scope": "agent", "id": "00" * 32},
    "answer": {"given": 1, "id": "00" * 32},
}


def hostile_json() -> st.SearchStrategy[bytes]:
    one_field = st.sampled_from(sorted(VALID)).flatmap(lambda name: st.tuples(
        st.sampled_from(sorted(VALID[name]) + ["x"]), json_value).map(
        lambda kv, name=name: json.dumps({**VALID[name], kv[0]: kv[1]}).encode()))
    deep = st.integers(500, 5000).map(lambda n: b"[" * n)  # within every size bound, past the parser's recursion
    return st.one_of(json_body(), json_value.map(lambda v: json.dumps(v).encode()), one_field, deep,
                     st.binary(max_size=200))


def decoded_or_listed(fn, body: bytes, errors: type | tuple[type, ...], codes: tuple[str, ...]) -> None:
    try:
        fn(body)
    except errors as e:
        code = getattr(e, "code", None) or (e.args[0] if e.args else None)
        assert code in codes, (fn.__module__, code, body[:200])


@FAST
@given(body=hostile_json())
def test_json_peer_messages_decode_or_raise_a_listed_code(body):
    decoded_or_listed(frontier.decode, body, PeerProtocolError, frontier.ERRORS)
    decoded_or_listed(proof.decode, body, PeerProtocolError, proof.ERRORS)
    decoded_or_listed(cosign.decode, body, cosign.CosignError, cosign.ERRORS)
    decoded_or_listed(notify.decode, body, ValueError, notify.ERRORS)
    decoded_or_listed(escrow_messages.decode_ask, body, LedgerError, escrow_messages.ERROR_CODES)
    decoded_or_listed(escrow_messages.decode_answer, body, LedgerError, escrow_messages.ERROR_CODES)


@FAST
@given(items=st.lists(hostile_item(), max_size=4), head=st.sampled_from([b"", b"\x81", b"\x84", b"\x9f", b"\xa1"]),
       asked=st.integers(0, 2000))
def test_an_entries_page_of_hostile_cbor_decodes_or_raises_a_listed_code(items, head, asked):
    decoded_or_listed(lambda b: entries.decode(b, asked), head + b"".join(items), PeerProtocolError, entries.ERRORS)
