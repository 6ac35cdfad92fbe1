"""Metered calls (the LLM gateway, the task meter) reserved against the budget book before they run."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledger.book import Admitted
from ledger.errors import Invalid, LedgerError
from ledger.events import unsigned_event
from node.store import meter as meter_store
from node.store.meter import OpenCall
from node.store.sqlite import Connection

if TYPE_CHECKING:
    from node.budgets import BudgetBook


def reserve_call(book: "BudgetBook", conn: Connection, call: OpenCall, now_ms: int,
                 persist: bool = True) -> tuple[Admitted, LedgerError | None]:
    """Hold a call's worst case against every budget of its agent and scopes, or say why not.

    The decision is the admission of an event charging that worst case, with every other
    open call's hold counted (so concurrent calls are never admitted beyond budget + reserve);
    admitted, the hold is persisted (meter_calls) before the call goes out, here or (persist
    False) by the caller, which then owns releasing the hold if it cannot. Writer thread only.
    """
    body: dict[str, Any] = {"op": "llm.call" if call.kind == "llm" else "agent.run", "cost": call.cost}
    if call.kind == "llm":
        body["units"] = call.tokens
    else:
        limit = book.max_cost_per_run(call.agent)
        if limit is not None and call.cost > limit:
            raise Invalid("run_limit_exceeded", f"estimated cost {call.cost} is over max_cost_per_run {limit}")
    probe = unsigned_event("act", call.agent, now_ms, body)
    out, refusal = book.admit(conn, probe, now_ms, dry_run=True)
    if refusal is not None:
        return out, refusal
    if persist:
        meter_store.insert_calls(conn, [call])
    book.call_book.hold(call, book.chain(call.agent))
    return out, None
