"""Read use cases: events, proofs, checkpoints, entries, usage and balances.

Each runs as one function on a reader connection (WAL: readers never wait for
the writer). Proofs follow "indexes → one query → pure compute": the stored
hash indexes come from `ledger.merkle`, one SELECT fetches them, and the proof
is computed in memory, so a proof costs O(log n) point reads.
"""

from __future__ import annotations

import re
import base64
from typing import Any

from ledger.errors import Invalid, LedgerError, NotFound
from ledger.events import KINDS, Event, parse_envelope
from ledger.merkle import leaf_hash
from node.budgets import BudgetBook
from node.ingest import OwnLog, stored_receipt
from node.replication import cluster_digest, digest_state
from node.store import logs as log_store
from node.store import peers as peer_store
from node.store import merkle as merkle_store
from node.store.sqlite import Connection, Database


def parse_hex32(value: str | None, what: str) -> bytes:
    """A 32-byte value written as 64 lowercase hex digits; raises Invalid."""
    if value is None or len(value) != 64:
        raise Invalid("bad_parameter", f"{what} must be 64 hex digits")
    try:
        raw = bytes.fromhex(value)
    except ValueError:
        raise Invalid("bad_parameter", f"{what} must be 64 hex digits") from None
    if value != raw.hex():
        raise Invalid("bad_parameter", f"{what} must be lowercase hex")
    return raw


def event_view(env_bytes: bytes) -> dict[str, Any]:
    """A JSON-friendly view of a stored envelope's event (bytes as hex)."""
    ev = parse_envelope(env_bytes, unknown_kinds=True).event  # a newer node's kind is shown as stored

    def j(v: Any) -> Any:
        return v.hex() if isinstance(v, bytes) else v

    return {
        "v": ev.v,
        "kind": ev.kind,
        "signer": ev.signer.hex(),
        "ts": ev.ts,
        "nonce": ev.nonce.hex(),
        "body": {k: j(v) for k, v in ev.body.to_map().items()},
    }


class Queries:
    def __init__(self, db: Database, own: OwnLog, book: BudgetBook, clock: Any, *, entries_page_max: int,
                 usage_events_max: int):
        self._clock = clock
        self._db = db
        self._own = own
        self._book = book
        self._entries_page_max = entries_page_max
        self._usage_events_max = usage_events_max

    # -- origins --------------------------------------------------------------

    def _origin(self, conn: Connection, origin_hex: str | None) -> tuple[bytes, int, int]:
        """(public key, row id, checkpointed size) of the named origin, or this node's."""
        if origin_hex is None:
            return self._own.public_key, self._own.origin_id, self._own.checkpoint_size
        key = parse_hex32(origin_hex, "origin")
        row = log_store.origin_row(conn, key)
        if row is None:
            raise NotFound("origin_not_found", f"this node holds no log of origin {origin_hex}")
        cp = log_store.latest_checkpoint(conn, row[0])
        return key, row[0], cp.size if cp else 0

    # -- events ---------------------------------------------------------------

    async def event(self, id_hex: str) -> dict[str, Any]:
        event_id = parse_hex32(id_hex, "event id")

        def run(conn: Connection) -> dict[str, Any]:
            stored = log_store.find_entries(conn, [event_id]).get(event_id)
            if stored is None:
                raise NotFound("event_not_found", f"no event with id {id_hex}")
            return {
                "id": id_hex,
                "envelope": base64.b64encode(stored.envelope).decode(),
                "event": event_view(stored.envelope),
                "receipt": stored_receipt(stored, "accepted"),
                "accepted_ms": stored.accepted_ms,
            }

        return await self._db.read(run)

    # -- log ------------------------------------------------------------------

    async def checkpoint(self, origin_hex: str | None) -> str:
        """The latest signed checkpoint, with the cosignatures witnesses sent for it."""
        if origin_hex is None or origin_hex == self._own.public_key.hex():
            note, size = self._own.checkpoint_note, self._own.checkpoint_size
            lines = await self._db.read(peer_store.cosignatures, self._own.origin_id, size)
            return note + "".join(line + "\n" for line in lines)

        def run(conn: Connection) -> str:
            _key, origin_id, _size = self._origin(conn, origin_hex)
            cp = log_store.latest_checkpoint(conn, origin_id)
            if cp is None:
                raise NotFound("origin_not_found", f"no checkpoint of origin {origin_hex}")
            return cp.note

        return await self._db.read(run)

    async def anchored(self, origin_hex: str | None, quorum: int) -> str | None:
        """The latest checkpoint with at least quorum cosignatures, as a note with those lines."""

        def run(conn: Connection) -> str | None:
            _key, origin_id, _size = self._origin(conn, origin_hex)
            found = peer_store.anchored(conn, origin_id, quorum)
            if found is None:
                return None
            _size, note, lines = found
            return note + "".join(line + "\n" for line in lines)

        return await self._db.read(run)

    async def digest(self) -> dict[str, Any]:
        def run(conn: Connection) -> dict[str, Any]:
            origins, forked = digest_state(conn)
            return {
                "digest": cluster_digest(origins, forked),
                "origins": [{"origin": o.hex(), "size": s, "root": n.split("\n")[2]} for o, s, n in origins if s],
            }

        return await self._db.read(run)

    async def forks(self) -> list[dict[str, Any]]:
        return await self._db.read(peer_store.forks)

    def _now(self) -> int:
        return self._clock.now_ms()

    async def inclusion(self, id_hex: str, origin_hex: str | None, size: int | None) -> dict[str, Any]:
        event_id = parse_hex32(id_hex, "id")

        def run(conn: Connection) -> dict[str, Any]:
            if origin_hex is not None:
                key, origin_id, latest = self._origin(conn, origin_hex)
                row = log_store.entry_in_origin(conn, origin_id, event_id)
            else:
                stored = log_store.find_entries(conn, [event_id]).get(event_id)
                row = None
                if stored is not None:
                    key, origin_id, latest = self._origin(conn, stored.origin.hex() if stored.origin != self._own.public_key else None)
                    row = (stored.index, stored.envelope)
            if row is None:
                raise NotFound("event_not_found", f"no event with id {id_hex}" + (f" in origin {origin_hex}" if origin_hex else ""))
            index, envelope = row
            tree_size = latest if size is None else size
            if index >= tree_size:
                raise Invalid("bad_range", f"event index {index} is not in a tree of size {tree_size} (not yet checkpointed?)")
            if tree_size > latest:
                raise Invalid("bad_range", f"size {tree_size} is beyond the origin's checkpointed size {latest}")
            proof = merkle_store.inclusion_proof_at(conn, origin_id, index, tree_size)
            return {
                "origin": key.hex(),
                "index": index,
                "size": tree_size,
                "leaf_hash": leaf_hash(envelope).hex(),
                "proof": [h.hex() for h in proof],
            }

        return await self._db.read(run)

    async def consistency(self, first: int, second: int | None, origin_hex: str | None) -> dict[str, Any]:
        def run(conn: Connection) -> dict[str, Any]:
            key, origin_id, latest = self._origin(conn, origin_hex)
            to = latest if second is None else second
            if to > latest:
                raise Invalid("bad_range", f"to={to} is beyond the origin's checkpointed size {latest}")
            if first < 1:
                raise Invalid(
                    "bad_range",
                    "from must be at least 1: a consistency proof from the empty tree is meaningless"
                    " (RFC 9162, transparency-dev rule); trust the first checkpoint you see instead",
                )
            if first > to:
                raise Invalid("bad_range", f"from={first} is larger than to={to}")
            proof = merkle_store.consistency_proof_at(conn, origin_id, first, to) if first < to else []
            return {"origin": key.hex(), "from": first, "to": to, "proof": [h.hex() for h in proof]}

        return await self._db.read(run)

    async def entries(self, start: int, end: int, origin_hex: str | None) -> dict[str, Any]:
        def run(conn: Connection) -> dict[str, Any]:
            key, origin_id, latest = self._origin(conn, origin_hex)
            if start < 0 or end < start:
                raise Invalid("bad_range", "need 0 <= start <= end")
            if start > latest:
                raise Invalid("bad_range", f"start={start} is beyond the origin's checkpointed size {latest}")
            stop = min(end, latest, start + self._entries_page_max)
            envelopes = log_store.entries_range(conn, origin_id, start, stop)
            return {"origin": key.hex(), "start": start, "entries": envelopes}

        return await self._db.read(run)

    # -- agents ---------------------------------------------------------------

    async def usage(self, agent_hex: str, since: int, until: int, kind: str | None) -> dict[str, Any]:
        agent = self.identity(agent_hex, "agent")
        if kind is not None and kind not in KINDS:
            raise Invalid("unknown_kind", f"unknown kind {kind[:64]!r}")
        if since > until:
            raise Invalid("bad_range", "since must not be after until")

        def run(conn: Connection) -> dict[str, Any]:
            totals = {}
            for k, count, *sums in log_store.usage_totals(conn, agent, since, until, kind):
                names = KINDS[k].METRICS if k in KINDS else ()
                totals[k] = {"count": count, **{name: int(sums[i] or 0) for i, name in enumerate(names)}}
            rows = log_store.usage_events(conn, agent, since, until, kind, self._usage_events_max + 1)
            events = [
                {"id": eid.hex(), "origin": origin.hex(), "index": idx, **event_view(env)}
                for eid, origin, idx, env in rows[: self._usage_events_max]
            ]
            return {
                "agent": agent_hex,
                "since": since,
                "until": until,
                "kind": kind,
                "totals": totals,
                "events": events,
                "truncated": len(rows) > self._usage_events_max,
            }

        return await self._db.read(run)

    async def balance(self, agent_hex: str, now_ms: int) -> dict[str, Any]:
        """Every budget of the agent and its scopes; read on the writer thread for a consistent view."""
        agent = self.identity(agent_hex, "agent")
        return await self._db.write(self._book.balance, agent, now_ms)

    @property
    def book(self) -> BudgetBook:
        """The budget book (node/readauth.py reads its grants, names and scopes)."""
        return self._book

    def identity(self, text: str, what: str) -> bytes:
        """An agent's or user's key from 64 hex digits or its readable name (agent.register);
        raises bad_parameter or unknown_name. (A dict read: the writer thread only adds names.)"""
        if len(text) == 64:
            return parse_hex32(text, what)
        if not re.fullmatch(r"[a-z0-9._-]{1,64}", text):
            raise Invalid("bad_parameter", f"{what} must be 64 hex digits or a name (a-z0-9._-)")
        key = self._book.names.get(text)
        if key is None:
            raise NotFound("unknown_name", f"no agent or user is named {text[:64]!r} (names come from agent.register)")
        return key

    def name_of(self, text: str) -> dict[str, Any]:
        """GET /v1/names/{name}: the key of a name, and whether it names an agent or a user."""
        key = self.identity(text, "name")
        kind = "agent" if key in self._book.registrations else ("user" if key in self._book.users else "unknown")
        return {"name": self._book.key_names.get(key), "key": key.hex(), "scope": kind}

    async def owner_budgets(self, scope: str | None, scope_id: str | None, now_ms: int) -> dict[str, Any]:
        """Owner budgets (budget.set) in force and scheduled, with their use; on the writer thread."""
        return await self._db.write(self._book.owner_listing, scope, scope_id, now_ms)

    async def quota_check(self, event: Event, now_ms: int) -> dict[str, Any]:
        """Would this event be admitted now? Decided like a submission; nothing is recorded."""

        def run(conn: Connection) -> dict[str, Any]:
            try:
                admitted, rejection = self._book.admit(conn, event, now_ms, dry_run=True)
            except LedgerError as e:
                rejection, admitted = e, None
            answer: dict[str, Any] = {
                "allowed": rejection is None,
                "agent": event.signer.hex(),
                "kind": event.kind,
                "budgets": admitted.budgets if admitted else [],
            }
            if rejection is not None:
                answer["error"] = rejection.to_json()["error"]
                if "retry_after_ms" in rejection.details:
                    answer["retry_after_ms"] = rejection.details["retry_after_ms"]
            if admitted is not None and admitted.run:
                answer["run"] = admitted.run
            return answer

        return await self._db.write(run)
