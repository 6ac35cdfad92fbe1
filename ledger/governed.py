"""The governed policy: every parameter governance may change, its defaults, its validation,
and the grammar of the changes a proposal makes (ledger/governance.py folds the proposals).

Change grammar
--------------
`changes` is a CBOR-friendly map with one or more of these keys (any other key is invalid, and
so is an empty map or list anywhere in it):

    "budgets":          {kind: {field: value}}  kind in act/dat/cpt/trt; fields of `Budget`;
                                                merged into that kind's current budget
    "plan_overrides":   {plan: {quota: limit}}  plan in ledger.plans.PLANS, quota in QUOTAS,
                                                limit an int >= 0 or null ("by contract",
                                                unlimited); merged
    "stake_tiers":      [[threshold, num, den], ...]      replaces the table: highest first,
    "reputation_tiers": [[threshold_ppm, num, den], ...]  last threshold 0 (ledger.multipliers)
    "prices":           {name: int}             milli-T per unit, >= 0; merged, new names allowed
    "bursts":           [{"scope", "scope_id", "metric", "factor_pct", "start_ms", "end_ms"}]
                                                appended; factor 200..300 %, in force over
                                                [start_ms, end_ms), end - start <= 24 h
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from math import gcd
from typing import Any, Generic, NoReturn, TypeVar

from ledger.constants import AMOUNT_MAX, TIME_MS_MAX
from ledger.errors import Invalid
from ledger.kinds import DEFAULT_BUDGETS as _KIND_BUDGETS, METERING_KINDS
from ledger.multipliers import SCORE_PPM_MAX, Tiers, validate_tiers
from ledger.plans import PLANS, QUOTAS, Plan, plan_named, with_overrides
from ledger.policy import SCOPES
from ledger.windows import DAY_MS, WINDOWS

# Every count and limit fits a signed 64-bit SQLite INTEGER and a CBOR uint.
INT_MAX = 2**63 - 1
PCT_MAX = 100
BURST_PCT_MIN = 200
BURST_PCT_MAX = 300
BURST_MS_MAX = DAY_MS
TIERS_MAX = 16
TIER_TERM_MAX = 1_000_000  # bound on the numerator and denominator of a tier multiplier
PRICES_MAX = 256
BURSTS_PER_CHANGE_MAX = 64
KEY_BYTES = 32
KINDS = METERING_KINDS  # each usage kind has a default budget (ledger.kinds)
# Metric, price and scope names; 64 lowercase hex digits (an agent's key) also match.
_NAME_RE = re.compile(r"[a-z0-9._-]{1,64}")

V = TypeVar("V")


class FrozenMap(Mapping[str, V], Generic[V]):
    """A read-only, hashable map with str keys that iterates in key order, so equal maps iterate alike."""

    __slots__ = ("_data",)

    def __init__(self, items: Mapping[str, V] | None = None) -> None:
        self._data: dict[str, V] = dict(sorted((items or {}).items()))

    def __getitem__(self, key: str) -> V:
        return self._data[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __hash__(self) -> int:
        return hash(tuple(self._data.items()))

    def __repr__(self) -> str:
        return f"FrozenMap({self._data!r})"


@dataclass(frozen=True)
class Budget:
    """The default budget of one metering kind: `limit` of `metric` per UTC `window`, and its overage policy."""

    metric: str
    limit: int
    window: str  # one of ledger.windows.WINDOWS
    soft_pct: int  # warn (and throttle, if `throttle`) from here, % of limit
    hard_pct: int  # reject from here (after the reserve), % of limit; soft_pct <= hard_pct <= 100
    throttle: bool
    suspend: bool  # suspend the scope when it runs past hard + reserve
    reserve_pct: int  # emergency reserve above the hard limit, % of limit


@dataclass(frozen=True)
class Burst:
    """A temporary allowance: one scope's limits of `metric` × factor_pct/100 over [start_ms, end_ms)."""

    scope: str  # one of ledger.policy.SCOPES
    scope_id: str  # a name, or an agent's or user's key as 64 lowercase hex digits
    metric: str
    factor_pct: int  # BURST_PCT_MIN..BURST_PCT_MAX
    start_ms: int
    end_ms: int  # start_ms < end_ms <= start_ms + BURST_MS_MAX


Tier = tuple[int, tuple[int, int]]  # (threshold, (numerator, denominator)), in lowest terms

# Each usage kind's default budget is in its entry of the kind registry (ledger.kinds).
DEFAULT_BUDGETS: FrozenMap[Budget] = FrozenMap({kind: Budget(**b) for kind, b in _KIND_BUDGETS.items()})
# Stake in whole stake units; reputation in parts per million (as in ledger.multipliers).
DEFAULT_STAKE_TIERS: tuple[Tier, ...] = ((20_000, (2, 1)), (5_000, (3, 2)), (1_000, (5, 4)), (0, (1, 1)))
DEFAULT_REPUTATION_TIERS: tuple[Tier, ...] = (
    (900_000, (3, 2)), (800_000, (6, 5)), (700_000, (1, 1)), (500_000, (4, 5)), (0, (1, 2)),
)
# The price of one unit of each item in milli-T (thousandths of the internal compute unit "1T"),
# the unit act.cost counts in: a daily ACT budget of 5,000 T holds 500,000 LLM tokens at 10.
DEFAULT_PRICES: FrozenMap[int] = FrozenMap({
    "llm.call.token": 10,  # one LLM token, prompt or completion: 0.01 T
    "agent.run": 10_000,  # starting one agent run, before its tokens and tools: 10 T
    "tool.browser": 5_000,  # one browser tool call: 5 T
    "cpt.unit": 1_000,  # one CPU or GPU time slice: 1 T
    "dat.byte_per_kb": 1,  # one KiB read or written: 0.001 T
})


@dataclass(frozen=True)
class Policy:
    """Every governed parameter; immutable and hashable. Build new ones with `apply_changes`."""

    budgets: FrozenMap[Budget] = DEFAULT_BUDGETS
    plan_overrides: FrozenMap[FrozenMap[int | None]] = FrozenMap()
    stake_tiers: tuple[Tier, ...] = DEFAULT_STAKE_TIERS
    reputation_tiers: tuple[Tier, ...] = DEFAULT_REPUTATION_TIERS
    prices: FrozenMap[int] = DEFAULT_PRICES
    bursts: tuple[Burst, ...] = ()

    def stake_table(self) -> Tiers:
        """stake_tiers as the (threshold, Fraction) table of ledger.multipliers."""
        return tuple((t, Fraction(n, d)) for t, (n, d) in self.stake_tiers)

    def reputation_table(self) -> Tiers:
        """reputation_tiers as the (threshold, Fraction) table of ledger.multipliers."""
        return tuple((t, Fraction(n, d)) for t, (n, d) in self.reputation_tiers)

    def plan(self, name: str) -> Plan:
        """The plan of this name with its governed overrides; raises Invalid("unknown_plan")."""
        return with_overrides(plan_named(name), self.plan_overrides.get(name, FrozenMap()))

    def burst_pct(self, scope: str, scope_id: str, metric: str, at_ms: int) -> int:
        """The largest factor (%) of the bursts for this scope and metric in force at at_ms; 100 if none."""
        return max((b.factor_pct for b in self.bursts
                    if b.start_ms <= at_ms < b.end_ms and (b.scope, b.scope_id, b.metric) == (scope, scope_id, metric)),
                   default=100)


# -- validation ------------------------------------------------------------------------------


def _fail(path: str, message: str) -> NoReturn:
    raise Invalid("invalid_policy", f"{path}: {message}")


def _int(path: str, value: Any, lo: int, hi: int) -> int:
    # bool is an int subclass; True as a limit is a typo, not a count.
    if type(value) is not int or not lo <= value <= hi:
        _fail(path, f"must be an integer in {lo}..{hi}, got {value!r}")
    return value


def _name(path: str, value: Any) -> str:
    if type(value) is not str or not _NAME_RE.fullmatch(value):
        _fail(path, f"must be 1-64 characters of a-z0-9._-, got {value!r}")
    return value


def _check_budget(path: str, b: Budget) -> None:
    _name(f"{path}.metric", b.metric)
    _int(f"{path}.limit", b.limit, 0, INT_MAX)
    if b.window not in WINDOWS or type(b.window) is not str:
        _fail(f"{path}.window", f"must be one of {', '.join(WINDOWS)}, got {b.window!r}")
    for name in ("soft_pct", "hard_pct", "reserve_pct"):
        _int(f"{path}.{name}", getattr(b, name), 0, PCT_MAX)
    if b.soft_pct > b.hard_pct:
        _fail(path, f"soft_pct {b.soft_pct} exceeds hard_pct {b.hard_pct}")
    for name in ("throttle", "suspend"):
        if type(getattr(b, name)) is not bool:
            _fail(f"{path}.{name}", f"must be true or false, got {getattr(b, name)!r}")


def _check_tiers(path: str, tiers: Any, threshold_max: int) -> None:
    if type(tiers) is not tuple or not 1 <= len(tiers) <= TIERS_MAX:
        _fail(path, f"must hold 1..{TIERS_MAX} tiers")
    for i, tier in enumerate(tiers):
        if type(tier) is not tuple or len(tier) != 2 or type(tier[1]) is not tuple or len(tier[1]) != 2:
            _fail(f"{path}[{i}]", f"is not (threshold, (num, den)): {tier!r}")
        _int(f"{path}[{i}] threshold", tier[0], 0, threshold_max)
        num = _int(f"{path}[{i}] num", tier[1][0], 1, TIER_TERM_MAX)
        den = _int(f"{path}[{i}] den", tier[1][1], 1, TIER_TERM_MAX)
        if gcd(num, den) != 1:
            _fail(f"{path}[{i}]", f"{num}/{den} is not in lowest terms")
    try:
        validate_tiers(tuple((t, Fraction(n, d)) for t, (n, d) in tiers))
    except Invalid as e:
        _fail(path, e.message)


def _check_burst(path: str, b: Burst) -> None:
    if b.scope not in SCOPES or type(b.scope) is not str:
        _fail(f"{path}.scope", f"must be one of {', '.join(SCOPES)}, got {b.scope!r}")
    _name(f"{path}.scope_id", b.scope_id)
    _name(f"{path}.metric", b.metric)
    _int(f"{path}.factor_pct", b.factor_pct, BURST_PCT_MIN, BURST_PCT_MAX)
    _int(f"{path}.start_ms", b.start_ms, 0, TIME_MS_MAX)
    _int(f"{path}.end_ms", b.end_ms, b.start_ms + 1, b.start_ms + BURST_MS_MAX)


def validate_policy(policy: Policy) -> Policy:
    """policy, if every parameter is in range; raises Invalid("invalid_policy") naming the first that is not."""
    if set(policy.budgets) != set(KINDS):
        _fail("budgets", f"must hold exactly the kinds {', '.join(KINDS)}")
    for kind, budget in policy.budgets.items():
        _check_budget(f"budgets.{kind}", budget)
    for plan, limits in policy.plan_overrides.items():
        if plan not in PLANS:
            _fail("plan_overrides", f"unknown plan {plan!r}; known: {', '.join(PLANS)}")
        for quota, limit in limits.items():
            if quota not in QUOTAS:
                _fail(f"plan_overrides.{plan}", f"unknown quota {quota!r}; known: {', '.join(QUOTAS)}")
            if limit is not None:
                _int(f"plan_overrides.{plan}.{quota}", limit, 0, INT_MAX)
    _check_tiers("stake_tiers", policy.stake_tiers, INT_MAX)
    _check_tiers("reputation_tiers", policy.reputation_tiers, SCORE_PPM_MAX)
    if len(policy.prices) > PRICES_MAX:
        _fail("prices", f"more than {PRICES_MAX} prices")
    for item, price in policy.prices.items():
        _int(f"prices.{_name('prices', item)}", price, 0, AMOUNT_MAX)
    for i, burst in enumerate(policy.bursts):
        _check_burst(f"bursts[{i}]", burst)
    return policy


# -- the change grammar --------------------------------------------------------------------


def _map(path: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not value or any(type(k) is not str for k in value):
        _fail(path, "must be a non-empty map with text keys")
    return value


def _list(path: str, value: Any, length_max: int) -> tuple[Any, ...]:
    if not isinstance(value, (list, tuple)) or not 1 <= len(value) <= length_max:
        _fail(path, f"must be a list of 1..{length_max} items")
    return tuple(value)


def _known(path: str, m: Mapping[str, Any], allowed: Any) -> None:
    unknown = sorted(set(m) - set(allowed))
    if unknown:
        _fail(path, f"unknown keys {unknown}; known: {sorted(allowed)}")


_BUDGET_FIELDS = tuple(Budget.__dataclass_fields__)
_BURST_FIELDS = tuple(Burst.__dataclass_fields__)


def _apply_budgets(policy: Policy, change: Any) -> FrozenMap[Budget]:
    out = dict(policy.budgets)
    for kind, fields in _map("budgets", change).items():
        _known("budgets", {kind: None}, KINDS)
        update = _map(f"budgets.{kind}", fields)
        _known(f"budgets.{kind}", update, _BUDGET_FIELDS)
        out[kind] = replace(out[kind], **update)  # types and ranges: validate_policy
    return FrozenMap(out)


def _apply_plan_overrides(policy: Policy, change: Any) -> FrozenMap[FrozenMap[int | None]]:
    out = dict(policy.plan_overrides)
    for plan, limits in _map("plan_overrides", change).items():
        merged = dict(out.get(plan, FrozenMap()))
        merged.update(_map(f"plan_overrides.{plan}", limits))
        out[plan] = FrozenMap(merged)
    return FrozenMap(out)


def _parse_tiers(path: str, change: Any) -> tuple[Tier, ...]:
    tiers = []
    for i, row in enumerate(_list(path, change, TIERS_MAX)):
        if not isinstance(row, (list, tuple)) or len(row) != 3:
            _fail(f"{path}[{i}]", f"must be [threshold, num, den], got {row!r}")
        threshold = _int(f"{path}[{i}] threshold", row[0], 0, INT_MAX)
        ratio = Fraction(_int(f"{path}[{i}] num", row[1], 1, TIER_TERM_MAX),
                         _int(f"{path}[{i}] den", row[2], 1, TIER_TERM_MAX))
        tiers.append((threshold, (ratio.numerator, ratio.denominator)))
    return tuple(tiers)


def _apply_prices(policy: Policy, change: Any) -> FrozenMap[int]:
    return FrozenMap({**policy.prices, **_map("prices", change)})


def _apply_bursts(policy: Policy, change: Any) -> tuple[Burst, ...]:
    added = []
    for i, item in enumerate(_list("bursts", change, BURSTS_PER_CHANGE_MAX)):
        m = _map(f"bursts[{i}]", item)
        if set(m) != set(_BURST_FIELDS):
            _fail(f"bursts[{i}]", f"must have exactly the keys {list(_BURST_FIELDS)}")
        added.append(Burst(**m))  # types and ranges: validate_policy
    return policy.bursts + tuple(added)


_APPLY: dict[str, Callable[[Policy, Any], Any]] = {
    "budgets": _apply_budgets,
    "plan_overrides": _apply_plan_overrides,
    "stake_tiers": lambda _, c: _parse_tiers("stake_tiers", c),
    "reputation_tiers": lambda _, c: _parse_tiers("reputation_tiers", c),
    "prices": _apply_prices,
    "bursts": _apply_bursts,
}


def apply_changes(policy: Policy, changes: Mapping[str, Any]) -> Policy:
    """policy with changes applied (grammar in the module docstring); raises Invalid("invalid_policy")."""
    top = _map("changes", changes)
    _known("changes", top, _APPLY)
    return validate_policy(replace(policy, **{key: _APPLY[key](policy, top[key]) for key in top}))


def _freeze(value: Any) -> Any:
    """A deep read-only copy of a validated change map (maps → FrozenMap, lists → tuples)."""
    if isinstance(value, Mapping):
        return FrozenMap({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


# Pair check (P4): the owner's defaults obey the rules that governed policies are held to.
DEFAULT_POLICY = validate_policy(Policy())
