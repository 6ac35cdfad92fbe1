"""The budget decision for one event, over counters, holds and rules it is given: no I/O, no clock.

Theory of operation. `decide(ask, view)` walks the rules of the event's chain
(agent, user, team, platform; ledger.budget.Rule) and, for each metric the
event spends, checks the window's counter (`view.counter`) plus what open runs
and calls hold (`view.held`) against the rule (`ledger.budget.evaluate`):

* admit: every rule fits (flags soft/hard/reserve crossings for the alerts);
* throttle: a rule past its soft limit with throttling paces spending (a new
  token bucket is returned either way, `Decision.buckets`);
* refuse: a rule's hard limit + reserve would be passed (`budget_exceeded`),
  strict mode has no rights here (`no_rights`, `view.strict_refusal`), or the
  counter would leave int64 (raises Invalid `amount_out_of_range`);
* a metered event (work already done, PROTOCOL.md §6) is never refused for
  budget: it is recorded with the flag `over_limit`;
* real spending past a hard limit with `suspend` set asks for a suspension
  (`Decision.suspends`); optimistic mode carries the union's overspend of the
  previous window as a debt, penalised once per rule and window
  (`Decision.penalties`).

The caller (node/budgets.py) applies a Decision: counters, buckets, runs, the
node records and alerts (`receipt_parts`), and writes them in its transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Container, Mapping, Protocol

from ledger import budget as rules_mod
from ledger import escrow as escrow_rules
from ledger.book import CounterKey, ScopeKey
from ledger.bookpolicy import alert
from ledger.budget import Bucket, Rule, evaluate, status
from ledger.constants import COUNTER_MAX
from ledger.errors import Invalid, LedgerError, OverBudget
from ledger.windows import window_bounds


class BookView(Protocol):
    """What decide reads of the book: counters (a miss is loaded by `counter`), holds, buckets, strict rights.

    Plain mappings rather than methods where the admission loop reads them for every rule."""

    counters: Mapping[CounterKey, int]  # the counters already known; `counter(key)` loads any other
    run_holds: Mapping[ScopeKey, int]  # act.cost held by open runs
    call_holds: Mapping[tuple[str, str, str], int]  # (scope, scope_id, metric) held by open metered calls
    buckets: Mapping[tuple[str, str, str, str], Bucket]
    settled: Container[tuple[tuple[str, str, str, str], int]]  # (rule key, window start) debts penalised
    strict: bool  # whether any rule may be strict here (`is_strict` is asked only then)

    def counter(self, key: CounterKey) -> int: ...

    def is_strict(self, rule: Rule) -> bool: ...

    def strict_refusal(self, key: CounterKey, spend: int) -> LedgerError | None: ...


def held(view: BookView, scope_key: ScopeKey, metric: str) -> int:
    """What open runs (act.cost) and open metered calls (their worst case) hold of a scope's metric."""
    total = view.run_holds.get(scope_key, 0) if metric == "act.cost" else 0
    if view.call_holds:
        total += view.call_holds.get(scope_key + (metric,), 0)
    return total


@dataclass(slots=True)
class Ask:
    """One event to decide: its rules, what it spends per metric and how it moves its run's hold."""

    rules: list[Rule]
    consume: Mapping[str, int]
    hold_delta: int  # act.cost a run record adds to (or, negative, releases from) the holds
    ts_ms: int
    now_ms: int
    metered: bool
    enforce: bool
    dry_run: bool


@dataclass(slots=True)
class Check:
    """One limited or counted rule the event touched, as the receipt reports it."""

    rule: Rule
    key: CounterKey
    consumed: int  # after the event
    spend: int
    held: int  # before the event
    window_end_ms: int
    flags: list[str]


class Decision:
    """What decide found: the refusal (None: admitted), the rules checked and what moves either way."""

    __slots__ = ("refusal", "checks", "strict_spends", "buckets", "suspends", "penalties")

    def __init__(self) -> None:
        self.refusal: LedgerError | None = None
        self.checks: list[Check] = []
        self.strict_spends: list[tuple[CounterKey, int]] = []  # (key, spend) of strict rules: @own counters
        self.buckets: dict[tuple[str, str, str, str], Bucket] = {}  # throttle buckets to keep
        self.suspends: list[tuple[Rule, int]] = []  # (rule, until ms)
        self.penalties: list[tuple[tuple[str, str, str, str], int]] = []  # (rule key, prev window) debts


def decide(ask: Ask, view: BookView) -> Decision:
    """Decide one event against its rules (see the module); raises Invalid amount_out_of_range."""
    out = Decision()
    ts = ask.ts_ms
    for rule in ask.rules:
        spend = ask.consume.get(rule.metric, 0)
        amount = spend + ask.hold_delta if rule.metric == "act.cost" else spend
        if amount <= 0 and not spend:
            continue
        window = _WINDOWS.get(rule.window)
        if window is None or not window[0] <= ts < window[1]:
            window = _window(rule.window, ts)  # (start, end, the previous window's start)
        if not _rule(ask, view, rule, spend, amount, window, out):
            return out
    return out


_WINDOWS: dict[str, tuple[int, int, int]] = {}  # the last bounds of each window name: events mostly share them
_WINDOWS_MAX = 4096


def window_at(window: str, ts_ms: int) -> tuple[int, int, int]:
    """(start, end, the previous window's start) of the window named `window` holding ts_ms, from
    the cache decide keeps (decide inlines this lookup)."""
    bounds = _WINDOWS.get(window)
    if bounds is None or not bounds[0] <= ts_ms < bounds[1]:
        bounds = _window(window, ts_ms)
    return bounds


def _window(window: str, ts_ms: int) -> tuple[int, int, int]:
    start, end = window_bounds(window, ts_ms)
    bounds = (start, end, window_bounds(window, start - 1)[0])
    if window not in _WINDOWS and len(_WINDOWS) >= _WINDOWS_MAX:
        _WINDOWS.clear()
    _WINDOWS[window] = bounds
    return bounds


def _rule(ask: Ask, view: BookView, rule: Rule, spend: int, amount: int, window: tuple[int, int, int], out: Decision) -> bool:
    """One rule of decide; False when the event is refused (out.refusal set)."""
    key = rule.key + (window[0],)
    consumed = view.counters.get(key)
    if consumed is None:
        consumed = view.counter(key)
    if consumed + spend > COUNTER_MAX:
        # the sum this node keeps for the window would leave int64 (ledger.constants): refused
        raise Invalid("amount_out_of_range", f"{rule.scope} {rule.metric} per {rule.window} would pass"
                      f" {COUNTER_MAX}, the largest usage counter this node keeps")
    holding = view.run_holds.get(rule.scope_key, 0) if rule.metric == "act.cost" else 0  # held(), inlined
    if view.call_holds:
        holding += view.call_holds.get(rule.scope_key + (rule.metric,), 0)
    flags: list[str] = []
    strict = rule.limit is not None and view.strict and view.is_strict(rule)
    if ask.enforce and strict:
        # strict mode: only against the rights this node holds (node/escrow.py)
        refusal = view.strict_refusal(key, spend)
        if refusal is not None and not ask.metered:
            out.refusal = spent_or(refusal, rule, consumed, holding, amount, ask.now_ms, window[1])
            return False
        out.strict_spends.append((key, spend))
    if rule.limit is not None:
        # optimistic mode: the union's overspend of the previous window is a debt counted here
        debt = 0 if strict else _debt(ask, view, rule, window[2], out)
        verdict = evaluate(rule, consumed + debt, holding, max(0, amount), ask.now_ms, window[1], view.buckets.get(rule.key))
        if verdict.bucket is not None:
            out.buckets[rule.key] = verdict.bucket
        if not verdict.ok and ask.enforce:
            # only real spending suspends: an estimate that does not fit is just refused
            if verdict.suspend_until_ms is not None and spend > 0:
                out.suspends.append((rule, verdict.suspend_until_ms))
            if not ask.metered:
                out.refusal = OverBudget(verdict.code, verdict.message, details={"retry_after_ms": verdict.retry_after_ms})
                return False
            verdict.flags.append("over_limit")  # done already: recorded, and the next call is refused
        flags = verdict.flags
    out.checks.append(Check(rule, key, consumed + spend, spend, holding, window[1], flags))
    return True


def _debt(ask: Ask, view: BookView, rule: Rule, prev: int, out: Decision) -> int:
    """The overspend of rule's previous window (starting at prev ms) over the union of origins
    (docs/strict.md §optimistic). A function of the merged counters alone, so every node that holds
    the same events carries the same debt; the first time this node sees an agent's debt it asks
    for one trust penalty (not when budgets are only recorded: a node that does not enforce
    does not punish either)."""
    prev_key = rule.key + (prev,)
    used = view.counters.get(prev_key)
    if used is None:
        used = view.counter(prev_key)
    if not used:
        return 0
    _soft, hard, reserve = rules_mod.thresholds(rule)
    debt = escrow_rules.overspend(used, hard + reserve)
    if debt and rule.scope == "agent" and ask.enforce and not ask.dry_run and (rule.key, prev) not in view.settled \
            and (rule.key, prev) not in out.penalties:
        out.penalties.append((rule.key, prev))
    return debt


def spent_or(refusal: LedgerError, rule: Rule, consumed: int, held: int, amount: int, now_ms: int,
             window_end_ms: int) -> LedgerError:
    """Strict mode: "ask again soon" (no_rights, short Retry-After) only while the cluster has
    room; when the merged use already leaves no room for this event, the budget is spent until
    the window ends (budget_exceeded, Retry-After to the window's end), as in optimistic mode."""
    verdict = evaluate(rule, consumed, held, max(0, amount), now_ms, window_end_ms, None)
    if verdict.ok or verdict.code != "budget_exceeded":
        return refusal
    return OverBudget("budget_exceeded", verdict.message + " across the cluster (strict mode)",
                      details={"retry_after_ms": verdict.retry_after_ms})


def budget_view(rule: Rule, consumed: int, held: int, window_end: int, flags: list[str]) -> dict[str, Any]:
    """One budget as a receipt, balance and quota check report it."""
    limit = rule.limit
    return {
        "scope": rule.scope,
        "scope_id": rule.scope_id,
        "metric": rule.metric,
        "window": rule.window,
        "source": rule.source,
        "allocated": limit,
        "consumed": consumed,
        "held": held,
        "remaining": None if limit is None else max(0, limit - consumed - held),
        "status": status(consumed + held, rule),
        "window_end": window_end,
        **({"flags": sorted(set(flags) - {"soft_crossed", "hard_crossed"})} if flags else {}),
    }


_CROSSINGS = (("soft_crossed", "soft_limit"), ("hard_crossed", "hard_limit"), ("reserve", "reserve"))


def receipt_parts(checks: list[Check], view: BookView, now_ms: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(budgets, alerts) of an admitted event, once applied: each limited rule with the holds after
    the event, and an alert for each threshold it crossed."""
    budgets, alerts = [], []
    for c in checks:
        rule = c.rule
        if rule.limit is None:
            continue
        budgets.append(budget_view(rule, c.consumed, held(view, rule.scope_key, rule.metric), c.window_end_ms, c.flags))
        for flag, type_ in _CROSSINGS:
            if flag in c.flags and (type_ != "reserve" or "hard_crossed" in c.flags):
                alerts.append(alert(type_, rule.scope, rule.scope_id, rule.metric, now_ms,
                                    {"consumed": c.consumed, "limit": rule.limit}))
    return budgets, alerts


def dry_run_parts(checks: list[Check], hold_delta: int) -> list[dict[str, Any]]:
    """The budgets a quota check reports: each limited rule as it would stand after the event."""
    return [budget_view(c.rule, c.consumed, c.held + (hold_delta if c.rule.metric == "act.cost" else 0),
                        c.window_end_ms, c.flags)
            for c in checks if c.rule.limit is not None]
