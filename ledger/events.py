"""Events and envelopes (PROTOCOL.md §3), parsed from untrusted bytes.

An event is a deterministic-CBOR map {v, kind, signer, ts, nonce, body}; an
envelope is {event: bytes, sig: bytes(64)}. `parse_envelope` checks, in this
order, so that the cheapest check rejects first: size, CBOR and canonical form
of the envelope, its keys, CBOR and canonical form of the event, the event's
keys and types, and the body against its kind's schema. It does not check the
signature (see `ledger.signing.verify`) or the clock (see `ledger.admission`).

Kinds are a registry: `register_kind(name, BodyClass)`. The four metering kinds
are registered here; policy, governance and node records register their own
bodies without touching this module.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

from ledger import encoding
from ledger.constants import (
    AMOUNT_MAX,
    ENVELOPE_BYTES_MAX,
    EVENT_BYTES_MAX,
    NODE_NAME_CHARS_MAX,
    NONCE_SIZE,
    PROTOCOL_VERSION,
    PUBLIC_KEY_SIZE,
    SIGNATURE_SIZE,
    TIME_MS_MAX,
)
from ledger.errors import Invalid, Malformed, TooLarge
from ledger.signing import event_id

MODEL_CHARS_MAX = 128
_OP_RE = re.compile(r"[a-z0-9._-]{1,64}")
_EVENT_KEYS = frozenset({"v", "kind", "signer", "ts", "nonce", "body"})
_ENVELOPE_KEYS = frozenset({"event", "sig"})


# -- field checks ------------------------------------------------------------


def _uint(name: str, value: Any) -> int:
    """An amount: an unsigned integer of at most AMOUNT_MAX (the bound that keeps every sum in int64)."""
    if type(value) is not int or value < 0:
        raise Invalid("invalid_body", f"{name} must be an unsigned integer")
    if value > AMOUNT_MAX:
        raise Invalid("amount_out_of_range", f"{name} is {value}, more than this node accepts ({AMOUNT_MAX})")
    return value


def _int(name: str, value: Any) -> int:
    """A signed amount: |value| at most AMOUNT_MAX."""
    if type(value) is not int:
        raise Invalid("invalid_body", f"{name} must be an integer")
    if not -AMOUNT_MAX <= value <= AMOUNT_MAX:
        raise Invalid("amount_out_of_range", f"{name} is {value}, beyond ±{AMOUNT_MAX}")
    return value


def _time_ms(name: str, value: Any) -> int:
    """An instant in ms since the epoch, at most TIME_MS_MAX (the year 6429)."""
    if type(value) is not int or value < 0:
        raise Invalid("invalid_body", f"{name} must be unsigned milliseconds since the epoch")
    if value > TIME_MS_MAX:
        raise Invalid("amount_out_of_range", f"{name} is {value} ms, after the last instant this node accepts ({TIME_MS_MAX})")
    return value


def _bytes32(name: str, value: Any) -> bytes:
    if type(value) is not bytes or len(value) != 32:
        raise Invalid("invalid_body", f"{name} must be 32 bytes")
    return value


def _op(name: str, value: Any) -> str:
    if type(value) is not str or not _OP_RE.fullmatch(value):
        raise Invalid("invalid_body", f"{name} must be 1-64 characters of a-z0-9._-")
    return value


def _model(name: str, value: Any) -> str:
    if type(value) is not str or not 1 <= len(value) <= MODEL_CHARS_MAX or not value.isprintable():
        raise Invalid("invalid_body", f"{name} must be 1-{MODEL_CHARS_MAX} printable characters")
    return value


def _node_name(name: str, value: Any) -> str:
    if type(value) is not str or len(value) > NODE_NAME_CHARS_MAX:
        raise Invalid("invalid_body", f"{name} must be text of at most {NODE_NAME_CHARS_MAX} characters")
    return value


def _one_of(*choices: str) -> Callable[[str, Any], str]:
    def check(name: str, value: Any) -> str:
        if value not in choices or type(value) is not str:
            raise Invalid("invalid_body", f"{name} must be one of {', '.join(choices)}")
        return value

    return check


def spec(check: Callable[[str, Any], Any], *, required: bool = True) -> Any:
    """Declare a body field: its check and whether it may be left out."""
    return field(default=None, metadata={"check": check, "required": required})


# -- bodies ------------------------------------------------------------------


@dataclass(frozen=True)
class Body:
    """Base of kind bodies. Subclasses declare fields with `spec()`.

    `metrics()` names the amounts an event adds to usage totals; the store
    keeps them in a fixed order (`METRICS`) so totals are plain sums.
    """

    KIND: ClassVar[str] = ""
    METRICS: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_map(cls, m: Any) -> Body:
        if type(m) is not dict:
            raise Invalid("invalid_body", "body must be a map")
        declared = {f.name: f for f in fields(cls)}
        for key in m:
            if key not in declared:
                raise Malformed("unknown_field", f"unknown body key {key!r} for kind {cls.KIND}")
        values = {}
        for name, f in declared.items():
            if name in m:
                values[name] = f.metadata["check"](name, m[name])
            elif f.metadata["required"]:
                raise Invalid("invalid_body", f"body of kind {cls.KIND} needs {name!r}")
        return cls(**values)

    def to_map(self) -> dict[str, Any]:
        """The body as its CBOR map: fields left out stay out; list fields (kept as tuples) are lists."""
        out = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is not None:
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def metrics(self) -> tuple[int, ...]:
        return tuple(getattr(self, name) or 0 for name in self.METRICS)


@dataclass(frozen=True)
class ActBody(Body):
    """An action: `cost` in milli-T; `units` e.g. LLM tokens.

    Metering in the path (PROTOCOL.md §6, docs/protocol.md "Metered events"): `agent` names
    the agent charged when a meter (a node) signs; an LLM call records `model`, `tokens_in`
    and `tokens_out`, which go together and sum to `units`.
    """

    KIND: ClassVar[str] = "act"
    METRICS: ClassVar[tuple[str, ...]] = ("cost", "units")
    op: str = spec(_op)
    cost: int = spec(_uint)
    units: int | None = spec(_uint, required=False)
    result: bytes | None = spec(_bytes32, required=False)
    agent: bytes | None = spec(_bytes32, required=False)
    model: str | None = spec(_model, required=False)
    tokens_in: int | None = spec(_uint, required=False)
    tokens_out: int | None = spec(_uint, required=False)

    def __post_init__(self) -> None:
        llm = (self.model, self.tokens_in, self.tokens_out)
        if any(v is not None for v in llm):
            if any(v is None for v in llm):
                raise Invalid("invalid_body", "model, tokens_in and tokens_out go together")
            if self.units != self.tokens_in + self.tokens_out:  # type: ignore[operator]
                raise Invalid("invalid_body", "units must be tokens_in + tokens_out")


@dataclass(frozen=True)
class DatBody(Body):
    """Data moved: bytes read and written, and how long it took (ms)."""

    KIND: ClassVar[str] = "dat"
    METRICS: ClassVar[tuple[str, ...]] = ("read", "written", "dur")
    src: bytes = spec(_bytes32)
    dst: bytes = spec(_bytes32)
    read: int = spec(_uint)
    written: int = spec(_uint)
    dur: int = spec(_uint)
    agent: bytes | None = spec(_bytes32, required=False)  # the agent charged, when a meter signs


@dataclass(frozen=True)
class CptBody(Body):
    """Compute: CPU and GPU time slices, peak memory (MB), parallel jobs."""

    KIND: ClassVar[str] = "cpt"
    METRICS: ClassVar[tuple[str, ...]] = ("cpu", "gpu", "mem", "jobs")
    node: str = spec(_node_name)
    cpu: int = spec(_uint)
    gpu: int = spec(_uint)
    mem: int = spec(_uint)
    jobs: int = spec(_uint)
    agent: bytes | None = spec(_bytes32, required=False)  # the agent charged, when a meter signs


@dataclass(frozen=True)
class TrtBody(Body):
    """Trust: a rating of `subject` by the signer; `value` × 1000, may be negative."""

    KIND: ClassVar[str] = "trt"
    METRICS: ClassVar[tuple[str, ...]] = ("value",)
    subject: bytes = spec(_bytes32)
    type: str = spec(_one_of("accuracy", "compliance", "feedback", "reliability"))
    value: int = spec(_int)
    halflife: int = spec(_uint)


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


KINDS: dict[str, type[Body]] = {}
_UNKNOWN_KIND_RE = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
METERED_KINDS = frozenset({"act", "dat", "cpt"})  # kinds whose body may name the agent charged


def charged_agent(event: "Event") -> bytes:
    """The agent an event charges: the body's `agent` when a meter signed it, else the signer."""
    agent = getattr(event.body, "agent", None) if event.kind in METERED_KINDS else None
    return agent if agent is not None else event.signer


def is_metered(event: "Event") -> bool:
    """True for an event that names an agent charged (signed by a meter about that agent)."""
    return event.kind in METERED_KINDS and getattr(event.body, "agent", None) is not None


def register_kind(cls: type[Body]) -> type[Body]:
    """Add a body class to the kind registry (usable as a decorator)."""
    if not cls.KIND or cls.KIND in KINDS:
        raise ValueError(f"kind {cls.KIND!r} is empty or already registered")
    KINDS[cls.KIND] = cls
    return cls


for _cls in (ActBody, DatBody, CptBody, TrtBody):
    register_kind(_cls)


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


def make_event_bytes(kind: str, signer: bytes, ts: int, nonce: bytes, body: dict[str, Any]) -> bytes:
    """The deterministic CBOR of an event (checked against its kind's schema)."""
    value = {"v": PROTOCOL_VERSION, "kind": kind, "signer": signer, "ts": ts, "nonce": nonce, "body": body}
    raw = encoding.encode(value)
    parse_event(raw)
    return raw


def make_envelope_bytes(event_bytes: bytes, sig: bytes) -> bytes:
    """The deterministic CBOR of the envelope {event, sig}."""
    return encoding.encode({"event": event_bytes, "sig": sig})


def parse_event(raw: bytes, *, unknown_kinds: bool = False) -> Event:
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
    body_cls = KINDS.get(kind)
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
