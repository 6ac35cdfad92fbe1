"""Effective limits of a scope (rules with stake and reputation multipliers, plans, owner budgets and
bursts applied), cached until a policy record changes them or the time leaves the span they hold for.

The rules of a scope change only with: the book's `version` (a registration,
plan, stake, owner budget or governance record), the governed policy in force
(a fold span: `Governance.policy_span`), the bursts of the scope (their start
and end), its owner budgets in force (`OwnerBudgets.in_force_span`), and for an
agent the UTC day (reputation is a day-start score) and a rating about it
(`forget_agent`). An entry is (version, from ms, until ms, rules): a hit costs a
dict lookup and two comparisons, so admission computes limits once per scope
and policy change instead of once per event. Both caches are bounded
(`RULE_CACHE_MAX` entries, the oldest dropped first).
"""

from __future__ import annotations

import functools

from fractions import Fraction
from typing import TYPE_CHECKING

from ledger import budget as rules_mod
from ledger.budget import Overage, Rule
from ledger.governance import Policy
from ledger.multipliers import effective_limit, reputation_multiplier, stake_multiplier
from ledger.plans import QUOTA_METRICS
from ledger.scoped import OwnerBudget
from ledger.windows import DAY_MS
from node.store.sqlite import Connection

if TYPE_CHECKING:
    from node.budgets import BudgetBook

RULE_CACHE_MAX = 50_000
_Entry = tuple[int, int, int, list[Rule]]


class RuleCache:
    def __init__(self, book: "BudgetBook") -> None:
        self._book = book
        self._scopes: dict[tuple[str, str], _Entry] = {}
        # by agent (hex): its whole chain's (scopes, version, from, until, rules)
        self._chains: dict[str, tuple[list[tuple[str, str]], int, int, int, list[Rule]]] = {}
        # by agent charged (admission): (version, from, until, its chain's rules, rules by metric set)
        self._agents: dict[bytes, tuple[int, int, int, list[Rule], dict]] = {}

    def forget_agent(self, agent: bytes) -> None:
        self._scopes.pop(("agent", agent.hex()), None)
        self._chains.pop(agent.hex(), None)
        self._agents.pop(agent, None)

    def rules(self, conn: Connection, chain: list[tuple[str, str]], at_ms: int) -> list[Rule]:
        """Every rule on the chain's scopes in force at at_ms, with multipliers and bursts applied."""
        return self._chain(conn, chain, at_ms)

    def agent_spending(self, conn: Connection, agent: bytes, at_ms: int, metrics: tuple[str, ...]) -> list[Rule]:
        """The rules an event charging agent moves (its whole chain's, on these metrics), in chain order.

        The admission hot path: one dict lookup and two comparisons while nothing changed."""
        cached = self._agents.get(agent)
        version = self._book.policy.version
        if cached is None or cached[0] != version or not cached[1] <= at_ms < cached[2]:
            rules, lo, hi = self._compute(conn, self._book.policy.chain(agent), at_ms, version)
            cached = (version, lo, hi, rules, {})
            _put(self._agents, agent, cached)
        memo = cached[4]
        found = memo.get(metrics)
        if found is None:  # bounded by the metric sets of the event kinds
            found = memo[metrics] = [r for r in cached[3] if r.metric in metrics]
        return found

    def _chain(self, conn: Connection, chain: list[tuple[str, str]], at_ms: int) -> list[Rule]:
        version = self._book.policy.version
        head = chain[0] if chain else None
        agent = head[1] if head is not None and head[0] == "agent" else None
        if agent is not None:
            cached = self._chains.get(agent)
            if cached is not None:
                scopes, v, lo, hi, rules = cached
                if v == version and lo <= at_ms < hi and scopes == chain:
                    return rules
        out, lo, hi = self._compute(conn, chain, at_ms, version)
        if agent is not None:
            _put(self._chains, agent, (list(chain), version, lo, hi, out))
        return out

    def _compute(self, conn: Connection, chain: list[tuple[str, str]], at_ms: int, version: int) -> tuple[list[Rule], int, int]:
        """The chain's rules and the span [lo, hi) they hold for."""
        out: list[Rule] = []
        lo, hi = 0, 2**63
        for scope, scope_id in chain:
            entry = self._scope(conn, scope, scope_id, at_ms, version)
            lo, hi = max(lo, entry[1]), min(hi, entry[2])
            out.extend(entry[3])
        return out, lo, hi

    def _scope(self, conn: Connection, scope: str, scope_id: str, at_ms: int, version: int) -> _Entry:
        cached = self._scopes.get((scope, scope_id))
        if cached is not None and cached[0] == version and cached[1] <= at_ms < cached[2]:
            return cached
        state = self._book.policy
        policy = state.governance.policy_at(at_ms)
        lo, hi = state.governance.policy_span(at_ms)
        if scope == "agent":
            day = at_ms - at_ms % DAY_MS
            lo, hi = max(lo, day), min(hi, day + DAY_MS)
        for b in policy.bursts:
            if b.scope == scope and b.scope_id == scope_id:
                for t in (b.start_ms, b.end_ms):
                    if t <= at_ms:
                        lo = max(lo, t)
                    else:
                        hi = min(hi, t)
        owned: tuple[OwnerBudget, ...] = ()
        if state.owner_budgets.version:
            owned = state.owner_budgets.in_force(scope, scope_id, at_ms)
            o_lo, o_hi = state.owner_budgets.in_force_span(scope, scope_id, at_ms)
            lo, hi = max(lo, o_lo), min(hi, o_hi)
        rules = _owned(policy, self._scope_rules(conn, policy, scope, scope_id, at_ms), owned, at_ms)
        entry = (version, lo, hi, rules)
        _put(self._scopes, (scope, scope_id), entry)
        return entry

    def _scope_rules(self, conn: Connection, policy: Policy, scope: str, scope_id: str, at_ms: int) -> list[Rule]:
        out: list[Rule] = []
        state = self._book.policy
        agent = bytes.fromhex(scope_id) if scope == "agent" else None
        stake = state.stakes.get(agent, 0) if agent else 0
        score = self._book.score(conn, agent, at_ms) if agent else 0
        # f(stake) x g(score) once per scope (ledger.multipliers.effective_limit, exact in Fractions)
        factor = stake_multiplier(stake, policy.stake_table()) * reputation_multiplier(score, policy.reputation_table())
        for kind, b in policy.budgets.items():
            if agent is None:
                # ancestors count every metering kind's metric (visible in balance); their
                # limits come from the plan they are assigned, below
                o = _overage(b.soft_pct, b.hard_pct, b.throttle, False, b.reserve_pct)
                out.append(Rule(scope, scope_id, b.metric, b.window, None, o, kind))
                continue
            base = _scaled(b.limit, factor)
            o = _overage(b.soft_pct, b.hard_pct, b.throttle, b.suspend, b.reserve_pct)
            out.append(_burst(policy, Rule(scope, scope_id, b.metric, b.window, base, o, kind), at_ms))
        plan_name = state.plan_of(scope, scope_id)
        if plan_name is None:
            return out
        plan = policy.plan(plan_name)
        for quota, (metric, window) in QUOTA_METRICS.items():
            base = plan.limits[quota]
            if agent is not None:
                base = _scaled(base, factor)
            out.append(_burst(policy, Rule(scope, scope_id, metric, window, base, rules_mod.PLAN_QUOTA_OVERAGE, quota), at_ms))
        return out


def _owned(policy: Policy, rules: list[Rule], owned: tuple[OwnerBudget, ...], at_ms: int) -> list[Rule]:
    """The scope's rules with its owner budgets in force (ledger/scoped.py): an owner budget
    replaces the default of its metric and window; defaults of its metric in other windows
    stop limiting but are still counted (the balance shows them)."""
    if not owned:
        return rules
    metrics = {b.metric for b in owned}
    keys = {(b.metric, b.window) for b in owned}
    out = [
        r if r.metric not in metrics else Rule(r.scope, r.scope_id, r.metric, r.window, None, r.overage, r.source)
        for r in rules if (r.metric, r.window) not in keys
    ]
    for b in owned:
        o = _overage(b.soft_pct, b.hard_pct, b.throttle, b.suspend, b.reserve_pct)
        out.append(_burst(policy, Rule(b.scope, b.scope_id, b.metric, b.window, b.limit, o, "budget.set"), at_ms))
    return out


def _scaled(base: int | None, factor: Fraction) -> int | None:
    """floor(base x factor), as effective_limit computes it (None stays None; a bad base raises there)."""
    if base is None:
        return None
    if type(base) is not int or base < 0:
        return effective_limit(base, 0, 0)  # raises Invalid("bad_parameter")
    product = base * factor
    return product.numerator // product.denominator


def _burst(policy: Policy, rule: Rule, at_ms: int) -> Rule:
    factor = policy.burst_pct(rule.scope, rule.scope_id, rule.metric, at_ms)
    if factor == 100 or rule.limit is None:
        return rule
    return Rule(rule.scope, rule.scope_id, rule.metric, rule.window, rule.limit * factor // 100, rule.overage, rule.source)


@functools.lru_cache(maxsize=4096)
def _overage(soft_pct: int, hard_pct: int, throttle: bool, suspend: bool, reserve_pct: int) -> Overage:
    """One Overage for all the rules with these thresholds (an agent's rules are rebuilt daily)."""
    return Overage(soft_pct, hard_pct, throttle, suspend, reserve_pct)


def _put(cache: dict, key: object, value: object) -> None:
    if key not in cache and len(cache) >= RULE_CACHE_MAX:
        del cache[next(iter(cache))]
    cache[key] = value
