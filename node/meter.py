"""The meter in the path: reserve a call's worst case, then charge what it really used (PROTOCOL.md §6).

Theory of operation. A metered call (an LLM call through the gateway, a task run by
`ats exec`) goes through three steps, each on the single writer:

1. `reserve`: the book (node/budgets.py `reserve_call`) admits the call's worst case against
   every budget of the agent and its scopes, counting every other open call's hold, and
   persists the reservation (node/store/meter.py) before the call goes out. A refusal raises.
2. the work happens (no writer involved);
3. `charge_*`: the node signs a metered event naming the agent (its nonce is the call id) and
   commits it like any event; the same transaction deletes the reservation. Or `release`,
   when nothing was done (the upstream refused, or could not be reached).

A node killed between 1 and 3 finds the reservation at restart: `recover` charges it at its
worst case and raises a `call_recovered` alert, so no call goes unrecorded.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ledger.errors import LedgerError, NotReady
from node.budgets import BudgetBook
from node.clock import SystemClock
from node.ingest import Committer, Outcome, OwnRecord
from node.store import budgets as budget_store
from ledger.pricing import task_cost_milli
from node.store import meter as meter_store
from node.store.meter import OpenCall
from node.store.sqlite import Database

logger = logging.getLogger("ats.meter")
CALL_ID_SIZE = 16
RESERVE_BATCH_MAX = 256


@dataclass(frozen=True)
class Reservation:
    """A call admitted at its worst case: the budgets it touched (with its hold), and the price
    table it was priced at (immutable: safe to read off the writer)."""

    call: OpenCall
    budgets: list[dict[str, Any]]
    prices: Mapping[str, int]

    def remaining_after(self, cost: int) -> int | None:
        """The least act.cost remaining once this call costs `cost` instead of its hold (as of its admission)."""
        left = remaining(self.budgets)
        return None if left is None else left + self.call.cost - cost


class Meter:
    """Reservations and charges of metered calls, for the gateway and the task meter."""

    def __init__(self, db: Database, book: BudgetBook, committer: Committer, clock: SystemClock, own: Any,
                 on_alerts: Any = None):
        self._db, self._book, self._committer, self._clock, self._own = db, book, committer, clock, own
        self._on_alerts = on_alerts
        self._pending: list[tuple[dict[str, Any], asyncio.Future]] = []  # reservations waiting for the writer
        self._flusher: asyncio.Task | None = None

    @property
    def node_name(self) -> str:
        return "ats-" + self._own.public_key.hex()[:16]

    def writable(self) -> None:
        """Raise NotReady(read_only) on a read-only node: it never lets a call through unmetered."""
        if self._own.read_only_reason:
            raise NotReady("read_only", f"node is read-only: {self._own.read_only_reason}")

    async def reserve(self, agent: bytes, kind: str, model: str, tokens_in: int, tokens_out: int,
                      cost: int | None = None, timeout_ms: int = 0) -> Reservation:
        """Hold the worst case (an LLM call priced from the table now, or `cost` milli-T for a task);
        returns the call, the budgets it touched and the prices it was priced at; raises the refusal
        (OverBudget, Invalid)."""
        self.writable()
        ask = dict(agent=agent, kind=kind, model=model, tokens_in=tokens_in, tokens_out=tokens_out, cost=cost,
                   timeout_ms=timeout_ms, call=os.urandom(CALL_ID_SIZE))
        future = asyncio.get_running_loop().create_future()
        self._pending.append((ask, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.create_task(self._flush(), name="ats-meter-reserve")
        return await future

    async def _flush(self) -> None:
        """Group commit of reservations: every one waiting is decided in turn, then all admitted ones
        are persisted in one transaction (one fsync), as the committer does for events."""
        while self._pending:
            batch, self._pending = self._pending[:RESERVE_BATCH_MAX], self._pending[RESERVE_BATCH_MAX:]
            try:
                results = await self._db.write(self._reserve_batch, [ask for ask, _f in batch], self._clock.now_ms())
            except LedgerError as e:
                results = [e] * len(batch)
            except Exception as e:  # noqa: BLE001 - a storage error: nothing was persisted, every hold dropped
                results = [NotReady("not_ready", f"reservation not written: {e}")] * len(batch)
            for (_ask, future), result in zip(batch, results):
                if future.done():
                    continue
                if isinstance(result, LedgerError):
                    future.set_exception(result)
                else:
                    future.set_result(result)

    def _reserve_batch(self, conn: Any, asks: list[dict[str, Any]], now_ms: int) -> list[Any]:
        """Writer thread: decide each reservation in order (each sees the holds of those before it)."""
        book, results, admitted = self._book, [], []
        prices = book.governance.policy_at(now_ms).prices
        for a in asks:
            price = a["cost"] if a["cost"] is not None else book.llm_price(a["model"], a["tokens_in"], a["tokens_out"], now_ms)
            call = OpenCall(a["call"], a["agent"], a["kind"], a["model"], price, a["tokens_in"], a["tokens_out"], now_ms,
                            now_ms + a["timeout_ms"] if a["timeout_ms"] else 0)
            try:
                out, refusal = book.reserve_call(conn, call, now_ms, persist=False)
            except LedgerError as e:
                results.append(e)
                continue
            if refusal is not None:
                results.append(refusal)
                continue
            admitted.append(call)
            results.append(Reservation(call, out.budgets, prices))
        if admitted:
            try:
                meter_store.insert_calls(conn, admitted)
            except BaseException:
                book.drop_holds(admitted)
                raise
        return results

    async def release(self, call: OpenCall) -> None:
        """Forget a reservation: the call did no work (upstream refused it or was unreachable)."""
        await self._db.write(self._book.release_call, call.call)

    async def charge_llm(self, call: OpenCall, model: str, tokens_in: int, tokens_out: int) -> tuple[Outcome, int]:
        """Record an LLM call as the node's metered act event, priced at its ts; settles the reservation.
        Returns the outcome and the cost charged (milli-T)."""
        agent = call.agent
        name = "".join(c for c in model[:128] if c.isprintable()) or "unknown"
        charged = [0]

        def body(book: BudgetBook, ts_ms: int) -> dict[str, Any]:
            charged[0] = book.llm_price(name, tokens_in, tokens_out, ts_ms)
            return {"op": "llm.call", "agent": agent, "model": name, "tokens_in": tokens_in,
                    "tokens_out": tokens_out, "units": tokens_in + tokens_out, "cost": charged[0]}

        outcome = await self._record([OwnRecord("act", body, call.call)])
        return outcome, charged[0]

    async def charge_reserved(self, call: OpenCall) -> tuple[Outcome, int]:
        """Charge a call whose usage is unknown at its reservation (its worst case)."""
        if call.kind == "llm":
            return await self.charge_llm(call, call.model, call.tokens_in, call.tokens_out)
        agent, cost = call.agent, call.cost
        outcome = await self._record([OwnRecord("act", lambda _b, _t: {"op": "agent.run", "agent": agent, "cost": cost},
                                                call.call)])
        return outcome, cost

    async def charge_task(self, call: OpenCall, *, cpu_ms: int, mem_mb: int, jobs: int, read: int, written: int,
                          dur_ms: int) -> tuple[list[Outcome], int]:
        """Record a task (ats exec): an `agent.run` act of its cost (settles the reservation), a `cpt`
        and a `dat` of what it used, all naming the agent. Returns the outcomes and the cost (milli-T)."""
        agent, host, me = call.agent, call.model, self._own.public_key
        charged = [0]

        def act(book: BudgetBook, ts_ms: int) -> dict[str, Any]:
            charged[0] = task_cost_milli(book.prices_at(ts_ms), cpu_ms, read, written)
            return {"op": "agent.run", "agent": agent, "cost": charged[0]}

        records = [
            OwnRecord("act", act, call.call),
            OwnRecord("cpt", lambda _b, _t: {"node": host, "agent": agent, "cpu": -(-cpu_ms // 1000), "gpu": 0,
                                             "mem": mem_mb, "jobs": jobs}, os.urandom(CALL_ID_SIZE)),
            OwnRecord("dat", lambda _b, _t: {"src": agent, "dst": me, "agent": agent, "read": read,
                                             "written": written, "dur": dur_ms}, os.urandom(CALL_ID_SIZE)),
        ]
        outcomes = await self._committer.record(records)
        self._first(outcomes)
        return outcomes, charged[0]

    async def expired_tasks(self) -> list[OpenCall]:
        """Tasks whose settlement never came before they expired (the exec side died)."""
        now_ms = self._clock.now_ms()

        def scan(_conn: Any) -> list[OpenCall]:
            return [c for c, _chain in self._book.calls.values() if c.expires_ms and c.expires_ms <= now_ms]

        return await self._db.write(scan)

    async def prices(self, at_ms: int) -> dict[str, int]:
        """The governed price table in force at at_ms (read on the writer, which owns the book)."""
        return await self._db.write(lambda _conn: self._book.prices_at(at_ms))

    async def max_cost_per_run(self, agent: bytes) -> int | None:
        return await self._db.write(lambda _conn: self._book.max_cost_per_run(agent))

    def open_call(self, call_id: bytes) -> OpenCall | None:
        entry = self._book.calls.get(call_id)
        return entry[0] if entry else None

    async def _record(self, records: list[OwnRecord]) -> Outcome:
        return self._first(await self._committer.record(records))

    @staticmethod
    def _first(outcomes: list[Outcome]) -> Outcome:
        outcome = outcomes[0]
        if outcome.error is not None:
            # the reservation stays: it is charged at restart rather than lost
            logger.error("metered event not recorded: %s %s", outcome.error.code, outcome.error.message)
            raise outcome.error
        return outcome

    async def recover(self, orphans: list[OpenCall] | None = None,
                      reason: str = "the node stopped during the call; charged at its reservation") -> int:
        """Charge open reservations at their worst case, with a `call_recovered` alert: at start-up every
        one a killed node left open, later the tasks whose settlement never came."""
        if orphans is None:
            orphans = [call for call, _chain in list(self._book.calls.values())]
        for call in orphans:
            try:
                outcome, _cost = await self.charge_reserved(call)
            except LedgerError as e:
                logger.error("open call %s of agent %s not charged: %s", call.call.hex(), call.agent.hex()[:16], e.message)
                continue
            alert = {"ts_ms": self._clock.now_ms(), "type": "call_recovered", "scope": "agent",
                     "scope_id": call.agent.hex(), "metric": "act.cost",
                     "detail": json.dumps({"call": call.call.hex(), "kind": call.kind, "model": call.model,
                                           "charged": call.cost, "event": (outcome.receipt or {}).get("id"),
                                           "reason": reason},
                                          sort_keys=True)}
            ids = await self._db.write(lambda conn: _insert_alerts(conn, [alert]))
            logger.warning("charged call %s of agent %s at its reservation (%d milli-T): the node stopped during it",
                           call.call.hex(), call.agent.hex()[:16], call.cost)
            if self._on_alerts:
                self._on_alerts([{**alert, "id": ids[0]}])
        return len(orphans)


def _insert_alerts(conn: Any, alerts: list[dict[str, Any]]) -> list[int]:
    from node.store.sqlite import transaction

    with transaction(conn):
        return budget_store.insert_alerts(conn, alerts)


def remaining(budgets: list[dict[str, Any]], metric: str = "act.cost") -> int | None:
    """The least remaining amount of metric over a receipt's budgets (None: no limit touched)."""
    values = [b["remaining"] for b in budgets if b.get("metric") == metric and b.get("remaining") is not None]
    return min(values) if values else None

