"""What an exported event carries: one record per committed entry, the same for every sink.

A record is built from the stored entry (no signature check again: the node verified
it before storing it) and the scopes the node's budget book gives its signer. The
body is decoded once, with cbor2, for the summary fields (`op`, `model`, `cost`) and
a JSON copy; the envelope's exact bytes go along untouched, so a warehouse or a
subscriber can re-check the signature and recompute the leaf hash itself.

Adding a field: put it in `Record`, fill it in `record()`, add it to `summary()`, and
(for PostgreSQL) to the table and `postgres.ROW_COLUMNS`. Unknown body keys already
travel in `body`, so a new kind's fields land without any change here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import cbor2

from ledger.kinds import COSTED_KINDS, KINDS  # noqa: F401  (COSTED_KINDS: node.export.postgres)
from node.store.exports import EntryRow

# Kinds whose body `cost` (milli-T) is what they charge to `act.cost` budgets (PROTOCOL.md §3).
SUBJECT_PREFIX = "ats.events"


@dataclass(frozen=True)
class Record:
    origin: bytes
    index: int
    event_id: bytes
    kind: str
    agent: bytes  # the signer
    user: str | None  # scopes of the signer (agent.register), None when unregistered
    team: str | None
    platform: str | None
    ts_ms: int
    accepted_ms: int
    op: str | None
    model: str | None
    cost_mt: int  # milli-T charged to act.cost (0 for kinds that charge none)
    metrics: dict[str, int]
    body: dict[str, Any]
    envelope: bytes


def _jsonable(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def decode_body(envelope: bytes) -> dict[str, Any]:
    """The body map of a stored envelope, byte strings as hex (for JSON)."""
    event = cbor2.loads(cbor2.loads(envelope)["event"])
    body = event.get("body")
    return _jsonable(body) if isinstance(body, dict) else {}


def record(origin: bytes, row: EntryRow, scopes: dict[str, str]) -> Record:
    """The exported form of one stored entry; scopes: {"user", "team", "platform"} of its signer."""
    body = decode_body(row.envelope)
    cls = KINDS.get(row.kind)
    names = cls.METRICS if cls is not None else ()
    metrics = {name: amount for name, amount in zip(names, row.metrics)}
    cost = body.get("cost") if row.kind in COSTED_KINDS else None
    op, model = body.get("op"), body.get("model")
    return Record(
        origin=origin, index=row.index, event_id=bytes(row.event_id), kind=row.kind, agent=bytes(row.signer),
        user=scopes.get("user"), team=scopes.get("team"), platform=scopes.get("platform"),
        ts_ms=row.ts, accepted_ms=row.accepted_ms,
        op=op if isinstance(op, str) else None, model=model if isinstance(model, str) else None,
        cost_mt=cost if isinstance(cost, int) and cost >= 0 else 0,
        metrics=metrics, body=body, envelope=bytes(row.envelope),
    )


def summary(r: Record) -> dict[str, Any]:
    """The JSON summary that travels with the envelope (JetStream header `Ats-Summary`)."""
    return {
        "id": r.event_id.hex(), "origin": r.origin.hex(), "index": r.index, "kind": r.kind, "agent": r.agent.hex(),
        "user": r.user, "team": r.team, "platform": r.platform, "ts_ms": r.ts_ms, "accepted_ms": r.accepted_ms,
        "op": r.op, "model": r.model, "cost_mt": r.cost_mt, "metrics": r.metrics,
    }


def summary_json(r: Record) -> str:
    return json.dumps(summary(r), separators=(",", ":"), sort_keys=True)


def subject(origin: bytes, kind: str) -> str:
    """`ats.events.<origin hex>.<kind>`: one subject per origin log and kind (a dotted kind spans tokens)."""
    return f"{SUBJECT_PREFIX}.{origin.hex()}.{kind}"


def origin_filter(origin: bytes) -> str:
    """Every subject of one origin log."""
    return f"{SUBJECT_PREFIX}.{origin.hex()}.>"
