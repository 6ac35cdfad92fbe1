"""Event bodies: the field checks and the schema of each kind's body (PROTOCOL.md §3).

A body class declares its fields with `spec(check)`; `Body.from_map` checks an untrusted
CBOR map against them. The four usage kinds (ACT, DAT, CPT, TRT) are defined here; policy,
governance, run, escrow, owner-budget and read-grant bodies live beside their rules. Which
kinds exist, and what each one meters, is said once, in `ledger.kinds`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from typing import Any, Callable, ClassVar

from ledger.constants import AMOUNT_MAX, NODE_NAME_CHARS_MAX, TIME_MS_MAX
from ledger.errors import Invalid, Malformed

MODEL_CHARS_MAX = 128
_OP_RE = re.compile(r"[a-z0-9._-]{1,64}")


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
