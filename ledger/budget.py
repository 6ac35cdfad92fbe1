"""Budgets: what an event costs, and whether a scope may spend it now.

Theory of operation. An event *charges* amounts to metrics (`charges`): an ACT
event's cost weight to `act.cost`, its LLM tokens to `act.llm_tokens` when its
op is `llm.call`, one run to `act.runs` when its op is `agent.run`, and so on
(`METRICS`). It charges them to its signer and to every ancestor scope the
signer is registered under (agent → user → team → platform). A `Rule` limits
one metric of one scope over one UTC-aligned window. `evaluate` decides one
rule for one event from the amount already consumed in the event's window,
the amount held by pending run reservations, and the overage policy:

    consumed + held + amount  <  soft         ok (status healthy or normal)
                              ≥  soft         ok with a warning; throttled if the policy says
                              >  hard         ok from the emergency reserve while it lasts (flagged)
                              >  hard+reserve rejected: 429 budget_exceeded until the window ends,
                                              and the scope is suspended if the policy says

Everything here is integer arithmetic on values passed in, so every node that
holds the same events computes the same limits, statuses and decisions. The
token bucket of a throttled scope is the one piece of local pacing state; it
is passed in and returned, never read from a clock.
"""

from __future__ import annotations

import functools

from dataclasses import dataclass, field

from ledger import kinds as _kinds
from ledger.errors import check
from ledger.events import Event

# -- metrics -------------------------------------------------------------------

# metric name -> {kind: amount(body)}, and each metric's unit: from the kind registry.
METRICS = _kinds.METRICS
METRIC_UNITS = _kinds.METRIC_UNITS


def charges(event: Event) -> dict[str, int]:
    """The non-zero amount this event adds to each metric."""
    return _kinds.REGISTRY.charges(event.kind, event.body)


# -- rules and statuses ----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Overage:
    """What happens as a window fills: soft and hard thresholds in % of the limit."""

    soft_pct: int
    hard_pct: int
    throttle: bool
    suspend: bool
    reserve_pct: int


PLAN_QUOTA_OVERAGE = Overage(soft_pct=80, hard_pct=100, throttle=False, suspend=False, reserve_pct=0)


@dataclass(frozen=True, slots=True)
class Rule:
    """A limit on one metric of one scope over one window; limit None = unlimited.

    Slotted (no per-instance dict), with the thresholds shared between equal rules and the
    scope's key made on use: a node keeps every active agent's rules in memory
    (node/budgetrules.py), about nine per agent: 7.3 kB per agent with dicts, 4.9 kB now with
    the Overages shared too (scripts/bench_agent_memory.py).
    """

    scope: str
    scope_id: str
    metric: str
    window: str
    limit: int | None
    overage: Overage
    source: str  # the metering kind of a per-kind budget, or the plan quota name
    key: tuple[str, str, str, str] = field(init=False, repr=False, compare=False)
    amounts: tuple[int, int, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        # precomputed: the admission loop looks rules up by these on every event
        object.__setattr__(self, "key", (self.scope, self.scope_id, self.metric, self.window))
        object.__setattr__(self, "amounts", _amounts(self.limit or 0, self.overage))

    @property
    def scope_key(self) -> tuple[str, str]:
        return (self.scope, self.scope_id)


@functools.lru_cache(maxsize=4096)  # distinct (limit, overage) pairs; agents on one plan share a handful
def _amounts(limit: int, o: Overage) -> tuple[int, int, int]:
    """(soft, hard, reserve) of a limit: one tuple for every rule with the same limit and overage."""
    return (limit * o.soft_pct // 100, limit * o.hard_pct // 100, limit * o.reserve_pct // 100)


def thresholds(rule: Rule) -> tuple[int, int, int]:
    """(soft, hard, reserve) amounts of a limited rule, floored to integers (computed once per rule)."""
    return rule.amounts


def status(consumed: int, rule: Rule) -> str:
    """healthy (< 50 %), normal, warning (≥ soft), critical (≥ hard)."""
    if rule.limit is None:
        return "healthy"
    soft, hard, _reserve = thresholds(rule)
    if consumed >= hard:
        return "critical"
    if consumed >= soft:
        return "warning"
    if consumed * 2 < rule.limit:
        return "healthy"
    return "normal"


# -- throttling --------------------------------------------------------------------


@dataclass
class Bucket:
    """A token bucket for a scope past its soft limit: refills so that the rest of
    the budget lasts until the window ends. Negative: in debt after an event bigger than it."""

    tokens: int
    updated_ms: int


BUCKET_CAPACITY_PCT = 5  # of the limit: a burst a throttled scope may still spend at once


# -- decisions -----------------------------------------------------------------------


@dataclass
class Verdict:
    """The outcome of one rule for one event."""

    ok: bool
    code: str = ""
    message: str = ""
    retry_after_ms: int = 0
    flags: list[str] = field(default_factory=list)
    suspend_until_ms: int | None = None
    bucket: Bucket | None = None


def evaluate(
    rule: Rule,
    consumed: int,
    held: int,
    amount: int,
    now_ms: int,
    window_end_ms: int,
    bucket: Bucket | None,
) -> Verdict:
    """Decide one rule: may `amount` be added to `consumed` (+ `held` by reservations) now?"""
    if rule.limit is None:
        return Verdict(ok=True)
    soft, hard, reserve = thresholds(rule)
    before = consumed + held
    after = before + amount
    remaining_ms = max(1, window_end_ms - now_ms)
    flags = []
    if after > hard:
        if after <= hard + reserve:
            flags.append("reserve")
            if before <= hard:
                flags.append("hard_crossed")
            if before < soft:  # one event jumped past soft and hard: each crossing is reported
                flags.append("soft_crossed")
            return Verdict(ok=True, flags=flags)
        return Verdict(
            ok=False,
            code="budget_exceeded",
            message=(
                f"{rule.scope} {rule.scope_id[:16]} would use {after} of its {rule.metric} limit {rule.limit}"
                f" per {rule.window} (hard {hard}, reserve {reserve})"
            ),
            retry_after_ms=remaining_ms,
            suspend_until_ms=window_end_ms if rule.overage.suspend else None,
        )
    if after >= soft:
        flags.append("warning")
        if before < soft:
            flags.append("soft_crossed")
        if rule.overage.throttle:
            return _throttle(rule, hard - before, amount, now_ms, remaining_ms, bucket, flags)
    return Verdict(ok=True, flags=flags)


def _throttle(
    rule: Rule, room: int, amount: int, now_ms: int, remaining_ms: int, bucket: Bucket | None, flags: list[str]
) -> Verdict:
    """Token bucket: refills at room/remaining_ms so the rest of the budget lasts the window.

    The pace follows what is left (`room`, up to the hard limit) and the time left in the window.
    An event is admitted once the bucket holds its amount, or is full: an event larger than the
    burst capacity goes through on a full bucket and leaves it in debt (negative), so the wait
    comes after a big event rather than before it and the pace is kept either way. The wait is
    for min(amount, capacity) less what the bucket holds. Refill is exact: time that has not yet
    added a whole unit is kept.
    """
    check(rule.limit is not None, "a throttled rule has a limit")
    capacity = max(1, rule.limit * BUCKET_CAPACITY_PCT // 100)
    if bucket is None:
        bucket = Bucket(tokens=capacity, updated_ms=now_ms)
    elapsed = max(0, now_ms - bucket.updated_ms)
    # integer refill: room × elapsed / remaining, capped at the capacity; the clock moves on only
    # by the time the whole units added took, so frequent calls never round the refill to nothing
    added = room * elapsed // remaining_ms
    if bucket.tokens + added >= capacity:
        bucket = Bucket(tokens=capacity, updated_ms=now_ms)
    elif added:
        bucket = Bucket(tokens=bucket.tokens + added, updated_ms=bucket.updated_ms + added * remaining_ms // max(1, room))
    else:
        bucket = Bucket(tokens=bucket.tokens, updated_ms=bucket.updated_ms)
    need = min(amount, capacity)
    if bucket.tokens >= need:
        bucket.tokens -= amount  # may go negative: a big event's debt, paid back before the next
        return Verdict(ok=True, flags=flags + ["throttled"], bucket=bucket)
    missing = need - bucket.tokens
    wait_ms = -(-missing * remaining_ms // max(1, room))
    return Verdict(
        ok=False,
        code="throttled",
        message=f"{rule.scope} {rule.scope_id[:16]} is past its soft {rule.metric} limit and throttled",
        retry_after_ms=max(1, min(wait_ms, remaining_ms)),
        bucket=bucket,
    )
