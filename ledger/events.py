"""Events and envelopes (PROTOCOL.md §3), parsed from untrusted bytes.

An event is a deterministic-CBOR map {v, kind, signer, ts, nonce, body}; an
envelope is {event: bytes, sig: bytes(64)}. `parse_envelope` checks, in this
order, so that the cheapest check rejects first: size, CBOR and canonical form
of the envelope, its keys, CBOR and canonical form of the event, the event's
keys and types, and the body against its kind's schema. It does not check the
signature (see `ledger.signing.verify`) or the clock (see `ledger.admission`).

Which kinds exist is `ledger.kinds.KINDS`, one static registry; the parsers take
another registry as `kinds=` (tests build one with a kind of their own).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from ledger import encoding
from ledger.bodies import ActBody, Body, CptBody, DatBody, TrtBody, _uint, spec  # noqa: F401  (re-exported)
from ledger.constants import (
    ENVELOPE_BYTES_MAX,
    EVENT_BYTES_MAX,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    TIME_MS_MAX,
)
from ledger.errors import Invalid, Malformed, TooLarge
from ledger.kinds import KINDS, METERED_KINDS
from ledger.signing import event_id

Kinds = Mapping[str, type[Body]]
_UNKNOWN_KIND_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


@dataclass(frozen=True)
class UnknownBody(Body):
    """The body of an event whose kind this release does not know (a newer node's, met by
    replication during a rolling upgrade; `parse_event(raw, unknown_kinds=True)`): kept as its
    CBOR map, never checked against a schema, naming no metric, so it counts nowhere."""

    fields_map: Any = None

    @classmethod
    def from_map(cls, m: Any) -> Body:
        if type(m) is not dict:
            raise Invalid("invalid_body", "body must be a map")
        return cls(fields_map=m)

    def to_map(self) -> dict[str, Any]:
        return dict(self.fields_map)

_EVENT_KEYS = frozenset({"v", "kind", "signer", "ts", "nonce", "body"})
_ENVELOPE_KEYS = frozenset({"event", "sig"})


def charged_agent(event: Event) -> bytes:
    """The agent an event charges: the body's `agent` when a meter signed it, else the signer."""
    agent = getattr(event.body, "agent", None) if event.kind in METERED_KINDS else None
    return agent if agent is not None else event.signer


def is_metered(event: Event) -> bool:
    """True for an event that names an agent charged (signed by a meter about that agent)."""
    return event.kind in METERED_KINDS and getattr(event.body, "agent", None) is not None


# -- events and envelopes ----------------------------------------------------


@dataclass(frozen=True)
class Event:
    """A parsed, schema-checked event. `raw` is its exact CBOR bytes."""

    kind: str
    signer: bytes
    ts: int
    nonce: bytes
    body: Body
    raw: bytes
    id: bytes
    v: int = PROTOCOL_VERSION

    @property
    def id_hex(self) -> str:
        return self.id.hex()


@dataclass(frozen=True)
class Envelope:
    """An event with its signature. `raw` is the envelope's CBOR bytes: the leaf data."""

    event: Event
    sig: bytes
    raw: bytes


def make_event_bytes(kind: str, signer: bytes, ts: int, nonce: bytes, body: dict[str, Any], *,
                     kinds: Kinds = KINDS) -> bytes:
    """The deterministic CBOR of an event (checked against its kind's schema)."""
    value = {"v": PROTOCOL_VERSION, "kind": kind, "signer": signer, "ts": ts, "nonce": nonce, "body": body}
    raw = encoding.encode(value)
    parse_event(raw, kinds=kinds)
    return raw


def make_envelope_bytes(event_bytes: bytes, sig: bytes) -> bytes:
    """The deterministic CBOR of the envelope {event, sig}."""
    return encoding.encode({"event": event_bytes, "sig": sig})


def parse_event(raw: bytes, *, kinds: Kinds = KINDS, unknown_kinds: bool = False) -> Event:
    """Parse and check one event's CBOR bytes; raises Malformed, Invalid or TooLarge.

    unknown_kinds: an event of a kind not registered here (a well-formed kind name) parses with an
    `UnknownBody` instead of raising unknown_kind (what replication stores and relays)."""
    if len(raw) > EVENT_BYTES_MAX:
        raise TooLarge("event_too_large", f"event is {len(raw)} bytes, at most {EVENT_BYTES_MAX}")
    m = encoding.decode_canonical(raw)
    if type(m) is not dict:
        raise Invalid("invalid_event", "an event is a CBOR map")
    for key in m:
        if key not in _EVENT_KEYS:
            raise Malformed("unknown_field", f"unknown event key {key!r}")
    missing = sorted(_EVENT_KEYS - m.keys())
    if missing:
        raise Invalid("invalid_event", f"event is missing {', '.join(missing)}")
    if type(m["v"]) is not int or m["v"] != PROTOCOL_VERSION:
        raise Invalid("unsupported_version", f"protocol version must be {PROTOCOL_VERSION}")
    kind = m["kind"]
    if type(kind) is not str:
        raise Invalid("invalid_event", "kind must be text")
    body_cls = kinds.get(kind)
    if body_cls is None:
        if not (unknown_kinds and _UNKNOWN_KIND_RE.fullmatch(kind)):
            raise Invalid("unknown_kind", f"unknown event kind {kind[:64]!r}")
        body_cls = UnknownBody
    signer, ts, nonce = m["signer"], m["ts"], m["nonce"]
    if type(signer) is not bytes or len(signer) != PUBLIC_KEY_SIZE:
        raise Invalid("invalid_event", "signer must be a 32-byte public key")
    if type(ts) is not int or ts < 0:
        raise Invalid("invalid_event", "ts must be unsigned milliseconds since the epoch")
    if ts > TIME_MS_MAX:
        raise Invalid("amount_out_of_range", f"ts is {ts} ms, after the last instant this node accepts ({TIME_MS_MAX})")
    if type(nonce) is not bytes or len(nonce) != NONCE_SIZE:
        raise Invalid("invalid_event", f"nonce must be {NONCE_SIZE} bytes")
    body = body_cls.from_map(m["body"])
    return Event(kind=kind, signer=signer, ts=ts, nonce=nonce, body=body, raw=raw, id=event_id(raw))


def envelope_from_parts(event_bytes: Any, sig: Any, raw: bytes | None = None, *,
                        unknown_kinds: bool = False) -> Envelope:
    """Build and check an envelope from its two fields (the JSON form's path); raw if known."""
    if type(event_bytes) is not bytes or type(sig) is not bytes:
        raise Malformed("malformed_envelope", "envelope fields event and sig must be byte strings")
    if len(sig) != SIGNATURE_SIZE:
        raise Malformed("malformed_envelope", f"sig must be {SIGNATURE_SIZE} bytes")
    event = parse_event(event_bytes, unknown_kinds=unknown_kinds)
    return Envelope(event=event, sig=sig, raw=raw if raw is not None else make_envelope_bytes(event_bytes, sig))


def parse_envelope(raw: bytes, *, unknown_kinds: bool = False) -> Envelope:
    """Parse an envelope's CBOR bytes; raises Malformed, Invalid or TooLarge (unknown_kinds: parse_event)."""
    if len(raw) > ENVELOPE_BYTES_MAX:
        raise TooLarge("event_too_large", f"envelope is {len(raw)} bytes, at most {ENVELOPE_BYTES_MAX}")
    m = encoding.decode_canonical(raw)
    if type(m) is not dict:
        raise Malformed("malformed_envelope", "an envelope is a CBOR map {event, sig}")
    for key in m:
        if key not in _ENVELOPE_KEYS:
            raise Malformed("unknown_field", f"unknown envelope key {key!r}")
    if "event" not in m or "sig" not in m:
        raise Malformed("malformed_envelope", "an envelope needs event and sig")
    return envelope_from_parts(m["event"], m["sig"], raw, unknown_kinds=unknown_kinds)


def body_from_json(kind: str, doc: Any) -> dict[str, Any]:
    """A body map from its JSON form: byte fields are written as lowercase hex strings.

    Raises Invalid for an unknown kind or bad hex; the body is checked later
    against its kind's schema like any other.
    """
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise Invalid("unknown_kind", f"unknown event kind {str(kind)[:64]!r}")
    if not isinstance(doc, dict):
        raise Invalid("invalid_body", "body must be a JSON object")
    byte_fields = {f.name for f in fields(cls) if "bytes" in str(f.type)}
    out = {}
    for key, value in doc.items():
        if key in byte_fields and isinstance(value, str):
            try:
                value = bytes.fromhex(value)
            except ValueError:
                raise Invalid("invalid_body", f"{key} must be hex digits (64 hex digits for 32 bytes)") from None
        out[key] = value
    return out


def unsigned_event(kind: str, signer: bytes, ts: int, body: dict[str, Any]) -> Event:
    """An event that was never signed (raw and id empty): for estimates, never for the log."""
    cls = KINDS.get(kind)
    if cls is None:
        raise Invalid("unknown_kind", f"unknown event kind {kind[:64]!r}")
    return Event(kind=kind, signer=signer, ts=ts, nonce=bytes(NONCE_SIZE), body=cls.from_map(body), raw=b"", id=b"")
