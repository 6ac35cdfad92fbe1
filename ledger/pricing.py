"""What usage costs in milli-T (thousandths of the internal compute unit "1T"), from the governed price table.

One place prices both a run's estimate (`POST /v1/quota/check`, `run.reserve`
without a cost) and a recorded event (usage reports): the table is the
policy's `prices` (ledger/governance.py), milli-T per unit.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ledger.kinds import COSTED_KINDS

TOKEN_PRICE = "llm.call.token"
DAT_PRICE = "dat.byte_per_kb"
CPT_PRICE = "cpt.unit"
LLM_CALL_PRICE = "llm.call"  # a flat price per LLM call, before its tokens (default: none)
MODEL_IN_PREFIX = "llm.in."  # + model key: milli-T per 1,000 input (prompt) tokens
MODEL_OUT_PREFIX = "llm.out."  # + model key: milli-T per 1,000 output (completion) tokens
PRICE_NAME_CHARS_MAX = 64
_MODEL_KEY_BAD = re.compile(r"[^a-z0-9._-]")


def model_key(model: str) -> str:
    """A model's name as it appears in price names: lowercase, other characters than a-z0-9._- as '-',
    cut so that `llm.out.` + key fits the 64 characters of a price name ("meta-llama/Llama-3" ->
    "meta-llama-llama-3")."""
    return _MODEL_KEY_BAD.sub("-", model.lower())[: PRICE_NAME_CHARS_MAX - len(MODEL_OUT_PREFIX)]


def llm_cost_milli(prices: Mapping[str, int], model: str, tokens_in: int, tokens_out: int) -> int:
    """One LLM call's cost in milli-T: the flat `llm.call` price, plus input and output tokens at
    the model's per-1,000-token prices, rounded up to whole milli-T; a model with no price of its
    own pays `llm.call.token` per token (prompt and completion alike)."""
    key = model_key(model)
    per_token_k = prices.get(TOKEN_PRICE, 0) * 1000
    price_in = prices.get(MODEL_IN_PREFIX + key, per_token_k)
    price_out = prices.get(MODEL_OUT_PREFIX + key, per_token_k)
    return prices.get(LLM_CALL_PRICE, 0) + -(-(tokens_in * price_in + tokens_out * price_out) // 1000)


def task_cost_milli(prices: Mapping[str, int], cpu_ms: int, read: int, written: int) -> int:
    """A metered task's cost (ats exec): its CPU time in whole seconds (one `cpt.unit` each, rounded
    up) plus the KiB it read and wrote (`dat.byte_per_kb` each, rounded up)."""
    return -(-cpu_ms // 1000) * prices.get(CPT_PRICE, 0) + -(-(read + written) // 1024) * prices.get(DAT_PRICE, 0)


def model_priced(prices: Mapping[str, int], model: str) -> bool:
    """True when the table has an input or output price of its own for this model."""
    key = model_key(model)
    return MODEL_IN_PREFIX + key in prices or MODEL_OUT_PREFIX + key in prices


def estimate_milli(prices: Mapping[str, int], op: str, tokens: int) -> int:
    """A run or action's price: the price of op, plus tokens × the price of one LLM token."""
    return prices.get(op, 0) + tokens * prices.get(TOKEN_PRICE, 0)


def event_cost_milli(prices: Mapping[str, int], kind: str, op: str | None, charged: Mapping[str, int]) -> int:
    """An admitted event's cost in milli-T: exactly what it adds to `act.cost`, the one cost that
    budgets, receipts, balances, reports, the dashboard and metrics all show (docs/gateway.md).

    ACT: its `cost` (an agent's declared cost, or the node's price of what it metered); a run's
    charge and post: the milli-T they spent. DAT and CPT are counted in their own units (bytes,
    time slices) against their own budgets and cost nothing here: a metered task prices them
    into its `agent.run` act. TRT and reservations cost nothing (a reservation only holds).
    `prices` and `op` are kept for callers; the cost is fixed by the event itself.
    """
    if kind in COSTED_KINDS:
        return charged.get("act.cost", 0)
    return 0


def format_t(milli: int) -> str:
    """milli-T as a decimal string of T with three decimals: 12345 -> "12.345"."""
    sign = "-" if milli < 0 else ""
    whole, frac = divmod(abs(milli), 1000)
    return f"{sign}{whole}.{frac:03d}"
