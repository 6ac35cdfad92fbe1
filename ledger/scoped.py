"""Owner budgets: a signed limit on one metric of one scope, per window (`budget.set`, `budget.rm`).

Theory of operation. Governance (ledger/governance.py) sets the platform-wide
defaults by m-of-n vote: every agent's budget of a metering kind, the plans,
the tiers, the prices. An owner budget is narrower: one authority (or, where
the node's config names one, a team's admin key for that team) signs a record
that gives one scope (an agent, a user, a team or a platform) a limit on one
metric per one window, with its overage policy, from a stated time on:

    budget.set  {scope, id, metric, window, limit, [tz], [soft_pct, hard_pct,
                 reserve_pct, throttle, suspend], [effective]}
    budget.rm   {scope, id, metric, window, [tz], [effective]}

The records are logged and replicated like every policy record, and folded
here into `OwnerBudgets`, whose state depends on the set of records only:
for each budget key (scope, id, metric, window) the record in force at time t
is the one with the greatest (effective, ts, id) not after t, so any delivery
order gives every node the same limits. A budget in force overrides the plan
and governance defaults of the same metric for that scope (node/budgets.py):
a default on the same window is replaced, defaults on other windows stop
limiting (they are still counted, for the balance view).

Usage is counted per (scope, id, metric, window, window start), whatever rule
asked for the counter, so raising or lowering a limit mid-window compares the
same consumption with the new limit: nothing spent is counted twice or
forgotten. A budget on a (metric, window) that nothing counted before counts
from the moment it takes effect.

Everything here is pure: values in, values out, no clock.
"""

from __future__ import annotations

import re
from bisect import insort
from dataclasses import dataclass
from typing import Any, ClassVar

from ledger.errors import Conflict, Invalid
from ledger.constants import COUNTER_MAX
from ledger.bodies import Body, _time_ms, spec
from ledger.windows import CALENDAR_WINDOWS, OWNER_WINDOWS, valid_window, zone

SCOPES = ("agent", "user", "team", "platform")
_NAME_RE = re.compile(r"[a-z0-9._-]{1,64}")
_HEX_RE = re.compile(r"[0-9a-f]{64}")

# The owner's metric names -> the metric counted (ledger.budget.METRICS) and its unit.
METRIC_ALIASES: dict[str, str] = {
    "cost": "act.cost",  # milli-T
    "tokens": "act.llm_tokens",
    "runs": "act.runs",
    "messages": "act.messages",
    "bytes": "dat.bytes",
    "written": "dat.written",
    "cpu": "cpt.units",
    "events": "events",
}
KNOWN_METRICS = frozenset(METRIC_ALIASES.values())

# Overage policy of a budget.set that names none: warn at 80 %, refuse above 100 %.
DEFAULT_POLICY = {"soft_pct": 80, "hard_pct": 100, "reserve_pct": 0, "throttle": False, "suspend": False}


def metric_name(value: str) -> str:
    """The counted metric of an owner's name or a counted metric's own name; raises unknown_metric."""
    metric = METRIC_ALIASES.get(value, value)
    if metric not in KNOWN_METRICS:
        raise Invalid("unknown_metric", f"unknown metric {value!r}; known: {', '.join(sorted(METRIC_ALIASES))}")
    return metric


def window_name(window: str, tz: str | None) -> str:
    """The counter window of (window, tz): `month`, or `month@Europe/Paris`; raises unknown_window."""
    if window not in OWNER_WINDOWS:
        raise Invalid("unknown_window", f"unknown window {window!r}; known: {', '.join(OWNER_WINDOWS)}")
    if tz is None or tz == "UTC":
        return window
    if window not in CALENDAR_WINDOWS:
        raise Invalid("unknown_window", f"a time zone bounds only calendar windows ({', '.join(CALENDAR_WINDOWS)})")
    if zone(tz) is None:
        raise Invalid("unknown_window", f"unknown time zone {tz!r} (an IANA name such as Europe/Paris)")
    name = f"{window}@{tz}"
    assert valid_window(name)
    return name


# -- body fields ------------------------------------------------------------------------


def _scope(name: str, value: Any) -> str:
    if type(value) is not str or value not in SCOPES:
        raise Invalid("invalid_scope", f"{name} must be one of {', '.join(SCOPES)}")
    return value


def _scope_id(name: str, value: Any) -> str:
    if type(value) is not str or not (_NAME_RE.fullmatch(value) or _HEX_RE.fullmatch(value)):
        raise Invalid("invalid_body", f"{name} must be a name (a-z0-9._-) or 64 lowercase hex digits")
    return value


def _metric(name: str, value: Any) -> str:
    if type(value) is not str:
        raise Invalid("unknown_metric", f"{name} must be a metric name")
    metric_name(value)
    return value


def _window(name: str, value: Any) -> str:
    if type(value) is not str or value not in OWNER_WINDOWS:
        raise Invalid("unknown_window", f"{name} must be one of {', '.join(OWNER_WINDOWS)}")
    return value


def _tz(name: str, value: Any) -> str:
    if type(value) is not str or zone(value) is None:
        raise Invalid("unknown_window", f"{name} must be an IANA time zone name such as Europe/Paris")
    return value


def _limit(name: str, value: Any) -> int:
    # a usage counter saturates at COUNTER_MAX (ledger/constants.py): a larger limit could never be reached
    if type(value) is not int or not 0 <= value <= COUNTER_MAX:
        raise Invalid("invalid_limit", f"{name} must be an integer 0..{COUNTER_MAX}")
    return value


def _pct(name: str, value: Any) -> int:
    if type(value) is not int or not 0 <= value <= 100:
        raise Invalid("invalid_policy", f"{name} must be a percentage 0..100")
    return value


def _flag(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise Invalid("invalid_policy", f"{name} must be true or false")
    return value


class _OwnerBody(Body):
    METRICS: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class BudgetSetBody(_OwnerBody):
    """Give one scope a limit of one metric per window, from `effective` (ms; default: the record's ts)."""

    KIND: ClassVar[str] = "budget.set"
    scope: str = spec(_scope)
    id: str = spec(_scope_id)
    metric: str = spec(_metric)
    window: str = spec(_window)
    limit: int = spec(_limit)
    tz: str | None = spec(_tz, required=False)
    soft_pct: int | None = spec(_pct, required=False)
    hard_pct: int | None = spec(_pct, required=False)
    reserve_pct: int | None = spec(_pct, required=False)
    throttle: bool | None = spec(_flag, required=False)
    suspend: bool | None = spec(_flag, required=False)
    effective: int | None = spec(_time_ms, required=False)


@dataclass(frozen=True)
class BudgetRmBody(_OwnerBody):
    """Remove one scope's owner budget from `effective` on: the defaults apply again."""

    KIND: ClassVar[str] = "budget.rm"
    scope: str = spec(_scope)
    id: str = spec(_scope_id)
    metric: str = spec(_metric)
    window: str = spec(_window)
    tz: str | None = spec(_tz, required=False)
    effective: int | None = spec(_time_ms, required=False)


# -- the fold -----------------------------------------------------------------------------


@dataclass(frozen=True)
class OwnerBudget:
    """One budget.set (limit not None) or budget.rm (limit None) record, as values."""

    scope: str
    scope_id: str
    metric: str  # counted metric (ledger.budget.METRICS)
    window: str  # counter window: `month`, `day@Europe/Paris`, ...
    limit: int | None
    soft_pct: int
    hard_pct: int
    reserve_pct: int
    throttle: bool
    suspend: bool
    effective_ms: int
    ts_ms: int
    id: bytes  # the record's event id
    signer: bytes

    @property
    def key(self) -> tuple[str, str, str, str]:
        return (self.scope, self.scope_id, self.metric, self.window)

    @property
    def order(self) -> tuple[int, int, bytes]:
        return (self.effective_ms, self.ts_ms, self.id)

    def to_json(self) -> dict[str, Any]:
        return {
            "scope": self.scope, "id": self.scope_id, "metric": self.metric, "window": self.window,
            "limit": self.limit, "soft_pct": self.soft_pct, "hard_pct": self.hard_pct,
            "reserve_pct": self.reserve_pct, "throttle": self.throttle, "suspend": self.suspend,
            "effective": self.effective_ms, "ts": self.ts_ms, "record": self.id.hex(), "signer": self.signer.hex(),
        }


def from_record(kind: str, body: Any, ts_ms: int, event_id: bytes, signer: bytes) -> OwnerBudget:
    """The values of a budget.set or budget.rm body; raises its code (nothing is applied)."""
    if body.scope in ("agent", "user") and not _HEX_RE.fullmatch(body.id):
        raise Invalid("invalid_body", f"a {body.scope} is named by its key: 64 lowercase hex digits")
    if body.scope in ("team", "platform") and not _NAME_RE.fullmatch(body.id):
        raise Invalid("invalid_body", f"a {body.scope} is named by a-z0-9._-")
    metric = metric_name(body.metric)
    window = window_name(body.window, body.tz)
    effective = ts_ms if body.effective is None else body.effective
    if effective < ts_ms:
        raise Invalid("effective_in_past", f"effective {effective} is before the record's own ts {ts_ms}: "
                      "a budget change takes effect now or later, never in the past")
    if kind == "budget.rm":
        return OwnerBudget(body.scope, body.id, metric, window, None, 0, 0, 0, False, False,
                           effective, ts_ms, event_id, signer)
    p = {k: (DEFAULT_POLICY[k] if getattr(body, k) is None else getattr(body, k)) for k in DEFAULT_POLICY}
    if not 0 < p["soft_pct"] <= p["hard_pct"] <= 100:
        raise Invalid("invalid_policy", "soft_pct and hard_pct must satisfy 0 < soft_pct <= hard_pct <= 100")
    if body.limit * (p["hard_pct"] + p["reserve_pct"]) // 100 > COUNTER_MAX:
        raise Invalid("invalid_limit", "limit × (hard_pct + reserve_pct) overflows a 64-bit counter")
    return OwnerBudget(body.scope, body.id, metric, window, body.limit, p["soft_pct"], p["hard_pct"],
                       p["reserve_pct"], p["throttle"], p["suspend"], effective, ts_ms, event_id, signer)


class OwnerBudgets:
    """Every budget.set/budget.rm record, by scope and key, sorted by (effective, ts, id)."""

    def __init__(self) -> None:
        self._by_scope: dict[tuple[str, str], dict[tuple[str, str, str, str], list[OwnerBudget]]] = {}
        self._ids: set[bytes] = set()
        self.version = 0
        # (scope, id) -> (version, valid from, valid until, in_force): the answer holds between two
        # changes, and is the same tuple object, so callers compare it by identity cheaply
        self._cache: dict[tuple[str, str], tuple[int, int, int, tuple[OwnerBudget, ...]]] = {}

    def check(self, record: OwnerBudget) -> None:
        """Refuse a live record that collides with one already held: same key, same effective time
        (budget_exists), or removes a budget that is not there (budget_not_found)."""
        history = self._by_scope.get((record.scope, record.scope_id), {}).get(record.key, [])
        if any(r.effective_ms == record.effective_ms for r in history):
            raise Conflict("budget_exists", f"a budget change of {record.scope} {record.scope_id} {record.metric}"
                           f" per {record.window} already takes effect at {record.effective_ms}")
        if record.limit is None and self.in_force_record(record.key, record.effective_ms) is None:
            raise Invalid("budget_not_found", f"{record.scope} {record.scope_id} has no {record.metric} budget"
                          f" per {record.window} in force at {record.effective_ms}")

    def add(self, record: OwnerBudget) -> None:
        """Fold one record (any order, duplicates ignored)."""
        if record.id in self._ids:
            return
        self._ids.add(record.id)
        history = self._by_scope.setdefault((record.scope, record.scope_id), {}).setdefault(record.key, [])
        insort(history, record, key=lambda r: r.order)
        self.version += 1

    def in_force_record(self, key: tuple[str, str, str, str], at_ms: int) -> OwnerBudget | None:
        history = self._by_scope.get(key[:2], {}).get(key, ())
        current = None
        for r in history:
            if r.effective_ms > at_ms:
                break
            current = r
        return current if current is not None and current.limit is not None else None

    def in_force(self, scope: str, scope_id: str, at_ms: int) -> tuple[OwnerBudget, ...]:
        """The budgets of this scope in force at at_ms (fast when the scope has none)."""
        keys = self._by_scope.get((scope, scope_id))
        if not keys:
            return ()
        cached = self._cache.get((scope, scope_id))
        if cached is not None and cached[0] == self.version and cached[1] <= at_ms < cached[2]:
            return cached[3]
        out = []
        lo, hi = 0, 2**63
        for key, history in keys.items():
            for r in history:
                if r.effective_ms <= at_ms:
                    lo = max(lo, r.effective_ms)
                else:
                    hi = min(hi, r.effective_ms)
            r = self.in_force_record(key, at_ms)
            if r is not None:
                out.append(r)
        result = tuple(out)
        self._cache[(scope, scope_id)] = (self.version, lo, hi, result)
        return result

    def in_force_span(self, scope: str, scope_id: str, at_ms: int) -> tuple[int, int]:
        """[from, until) ms around at_ms in which in_force answers the same budgets (until a record changes them)."""
        self.in_force(scope, scope_id, at_ms)
        cached = self._cache.get((scope, scope_id))
        return (cached[1], cached[2]) if cached is not None and self._by_scope.get((scope, scope_id)) else (0, 2**63)

    def listing(self, scope: str | None, scope_id: str | None, at_ms: int) -> list[dict[str, Any]]:
        """Every key's budget in force at at_ms and its scheduled changes, for `ats budget list/get`."""
        out = []
        for (s, i), keys in sorted(self._by_scope.items()):
            if (scope is not None and s != scope) or (scope_id is not None and i != scope_id):
                continue
            for key, history in sorted(keys.items()):
                current = self.in_force_record(key, at_ms)
                scheduled = [r.to_json() for r in history if r.effective_ms > at_ms]
                if current is None and not scheduled:
                    continue
                out.append({"scope": s, "id": i, "metric": key[2], "window": key[3],
                            "in_force": None if current is None else current.to_json(), "scheduled": scheduled})
        return out
