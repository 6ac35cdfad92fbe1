"""What usage costs in milli-T (thousandths of the internal compute unit "1T"), from the governed price table.

One place prices both a run's estimate (`POST /v1/quota/check`, `run.reserve`
without a cost) and a recorded event (usage reports): the table is the
policy's `prices` (ledger/governance.py), milli-T per unit.
"""

from __future__ import annotations

from collections.abc import Mapping

TOKEN_PRICE = "llm.call.token"
DAT_PRICE = "dat.byte_per_kb"
CPT_PRICE = "cpt.unit"


def estimate_milli(prices: Mapping[str, int], op: str, tokens: int) -> int:
    """A run or action's price: the price of op, plus tokens × the price of one LLM token."""
    return prices.get(op, 0) + tokens * prices.get(TOKEN_PRICE, 0)


def event_cost_milli(prices: Mapping[str, int], kind: str, op: str | None, charged: Mapping[str, int]) -> int:
    """An admitted event's cost: its kind's amounts (ledger.budget.charges) at these prices.

    ACT: the op's price plus its LLM tokens (as an estimate would price it); a run's charge
    and post: the milli-T they spent; DAT: per KiB read or written; CPT: per CPU or GPU time
    slice; TRT and reservations cost nothing (a reservation only holds).
    """
    if kind == "act":
        return estimate_milli(prices, op or "", charged.get("act.llm_tokens", 0))
    if kind in ("run.charge", "run.post"):
        return charged.get("act.cost", 0)
    if kind == "dat":
        return charged.get("dat.bytes", 0) * prices.get(DAT_PRICE, 0) // 1024
    if kind == "cpt":
        return charged.get("cpt.units", 0) * prices.get(CPT_PRICE, 0)
    return 0


def format_t(milli: int) -> str:
    """milli-T as a decimal string of T with three decimals: 12345 -> "12.345"."""
    sign = "-" if milli < 0 else ""
    whole, frac = divmod(abs(milli), 1000)
    return f"{sign}{whole}.{frac:03d}"
