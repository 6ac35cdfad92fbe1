"""Read views of the budget book: balance, budgets of scopes, owner budgets (writer thread, like the book)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ledger.bookdecide import budget_view
from ledger.multipliers import reputation_multiplier, stake_multiplier
from ledger.windows import window_bounds
from node.store import budgets as budget_store
from node.store.sqlite import Connection

if TYPE_CHECKING:
    from node.budgets import BudgetBook


def budget_views(book: "BudgetBook", conn: Connection, scopes: list[tuple[str, str]], now_ms: int) -> list[dict[str, Any]]:
    """The budgets of these scopes in their windows holding now_ms, as balance shows them."""
    budgets = []
    for rule in book.rules(conn, scopes, now_ms):
        start, end = window_bounds(rule.window, now_ms)
        consumed = book.consumed(conn, rule.key + (start,))
        held = book.held((rule.scope, rule.scope_id), rule.metric)
        view = budget_view(rule, consumed, held, end, [])
        view["window_start"] = start
        budgets.append(view)
    return budgets


def resolve(book: "BudgetBook", text: str) -> bytes | None:
    """The agent or user key of a readable name or a 64-hex key; None if neither."""
    if len(text) == 64:
        try:
            return bytes.fromhex(text)
        except ValueError:
            return None
    return book.policy.names.get(text)


def _name_field(book: "BudgetBook", scope: str, scope_id: str) -> dict[str, str]:
    """{"name": ...} for an agent or user scope with a readable name, else {}."""
    key_names = book.policy.key_names
    name = key_names.get(bytes.fromhex(scope_id)) if scope in ("agent", "user") and key_names else None
    return {"name": name} if name else {}


def owner_listing(book: "BudgetBook", conn: Connection, scope: str | None, scope_id: str | None,
                  now_ms: int) -> dict[str, Any]:
    """Owner budgets (in force and scheduled) with their current window's use: GET /v1/budgets."""
    listing = book.policy.owner_budgets.listing(scope, scope_id, now_ms)
    for item in listing:
        current = item["in_force"]
        if current is None:
            continue
        start, end = window_bounds(item["window"], now_ms)
        consumed = book.consumed(conn, (item["scope"], item["id"], item["metric"], item["window"], start))
        held = book.held((item["scope"], item["id"]), item["metric"])
        item.update(window_start=start, window_end=end, consumed=consumed, held=held,
                    remaining=max(0, current["limit"] - consumed - held))
    return {"now": now_ms, "budgets": listing}


def balance(book: "BudgetBook", conn: Connection, agent: bytes, now_ms: int) -> dict[str, Any]:
    """Every budget of the agent and its scopes, as of now_ms."""
    policy_state = book.policy
    chain = policy_state.chain(agent)
    budgets = budget_views(book, conn, chain, now_ms)
    reg = policy_state.registrations.get(agent)
    suspension = policy_state.active_suspension(agent, now_ms) if book.enforce else None
    policy = policy_state.governance.policy_at(now_ms)
    stake = policy_state.stakes.get(agent, 0)
    score = book.score(conn, agent, now_ms)
    return {
        "agent": agent.hex(),
        "name": policy_state.key_names.get(agent),
        "now": now_ms,
        "registered": reg is not None,
        "scopes": [{"scope": s, "id": i, "plan": policy_state.plan_of(s, i), **_name_field(book, s, i)} for s, i in chain],
        "stake": stake,
        "reputation_ppm": score,
        "multipliers": {
            "stake": str(stake_multiplier(stake, policy.stake_table())),
            "reputation": str(reputation_multiplier(score, policy.reputation_table())),
        },
        "suspended": suspension is not None,
        "suspension": None if suspension is None else {
            "since": suspension.start_ms, "until": suspension.until_ms, "reason": suspension.reason,
            "metric": suspension.metric,
        },
        "runs": [
            {"run": r.run.hex(), "reserved": r.reserved, "spent": r.spent, "held": r.hold, "expires": r.expires_ms}
            for r in book.runs.of_agent(agent) if r.expires_ms > now_ms
        ],
        "budgets": budgets,
        "alerts": budget_store.recent_alerts(conn, chain, 20),
    }
