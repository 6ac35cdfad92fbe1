"""Governance: proposals and m-of-n votes by authority keys, folded into the policy in force.

Theory of operation
-------------------
The policy (`Policy`) holds every parameter that governance may change: the default budget
of each metering kind, plan overrides ("by contract" limits), the stake and reputation tier
tables, the price table and burst allowances. `DEFAULT_POLICY` holds the owner's numbers.

The inputs are replicated, signed records, which the node turns into plain values:

* a `Proposal`: an authority proposes `changes` (grammar below), to apply no earlier than
  `activate_at_ms`, open to votes until `expires_at_ms`;
* a `Vote`: an authority approves a proposal, or not, at its own `ts_ms`.

Every rule is a function of the set of records alone, never of the order they arrive in:

1. Only authorities propose and vote (`not_authority`). A proposal's changes are checked by a
   dry run against the *base* policy, which is fixed at construction, so whether a proposal is
   accepted never depends on which other proposals a node has seen (`invalid_policy`).
2. A vote names a known proposal (`proposal_not_found`) and is made no later than the proposal
   expires (`proposal_expired`, which compares the two records' own fields). A replicated vote
   that outruns its proposal is held (`hold_unknown=True`) and counted when the proposal comes.
3. Approvals only accumulate. A voter counts once, at the ts_ms of their earliest approving
   vote by (ts_ms, vote id); `approve=False` is tallied but never cancels an approval. So more
   records can adopt a proposal but never un-adopt one, and a `governance.policy.updated`
   record never has to be taken back. To undo a change, adopt a proposal that reverses it.
4. A proposal is adopted when its approvals reach the threshold m. It takes effect at
   effective_ms = max(activate_at_ms, the m-th smallest approval ts_ms), the moment the votes'
   own clocks reached the threshold, not the moment some node heard of it. A late vote with an
   earlier ts_ms can only move that time earlier, and `new_adoptions` then reports it again.
5. `policy_at(t)` applies to the base every adoption with effective_ms <= t, in
   (effective_ms, proposal id) order: a total order on the set. An adoption that does not
   validate on top of those before it (its soft_pct now above a hard_pct adopted earlier, say)
   is skipped, and `rejected()` says why; the same set skips the same adoptions.

Each rule is a min, a max, a count or a sort over sets of records, so the fold is commutative
and idempotent: any delivery order, with any duplicates, gives the same state.

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
from bisect import bisect_right
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, replace
from fractions import Fraction
from math import gcd
from typing import Any, Generic, NoReturn, TypeVar

from ledger.constants import AMOUNT_MAX, TIME_MS_MAX
from ledger.errors import Conflict, Forbidden, Invalid, NotFound, check
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
KINDS = ("act", "dat", "cpt", "trt")
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

DEFAULT_BUDGETS: FrozenMap[Budget] = FrozenMap({
    # act.cost is in milli-T: a weight of 5,000 T is 5_000_000 thousandths.
    "act": Budget("act.cost", 5_000_000, "day", 80, 100, True, True, 10),
    "dat": Budget("dat.bytes", 2_000_000, "day", 85, 100, True, False, 5),
    "cpt": Budget("cpt.units", 500, "hour", 75, 90, True, True, 15),
    "trt": Budget("trt.count", 1_000, "week", 90, 100, False, False, 0),
})
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


# -- records and the fold ------------------------------------------------------------------


@dataclass(frozen=True)
class Proposal:
    """A `gov.propose` record: `id` is its event id, `proposer` its signer; times in ms."""

    id: bytes
    proposer: bytes
    ts_ms: int
    changes: Mapping[str, Any]
    activate_at_ms: int
    expires_at_ms: int


@dataclass(frozen=True)
class Vote:
    """A `gov.vote` record: `id` is its event id, `voter` its signer; ts_ms in ms."""

    id: bytes
    proposal: bytes
    voter: bytes
    ts_ms: int
    approve: bool


@dataclass(frozen=True)
class Adoption:
    """An adopted proposal and the time (ms) from which its (read-only) changes apply."""

    proposal: bytes
    effective_ms: int
    changes: Mapping[str, Any]


@dataclass(frozen=True)
class Rejection:
    """An adoption that the fold skipped, because it did not validate on top of earlier ones."""

    proposal: bytes
    effective_ms: int
    message: str


def policy_updated_body(adoption: Adoption) -> dict[str, Any]:
    """The body of the node's `governance.policy.updated` record for this adoption."""
    return {"proposal": adoption.proposal, "effective": adoption.effective_ms}


class Governance:
    """The fold of proposals and votes into adoptions and the policy in force (see the module docstring)."""

    def __init__(self, authorities: frozenset[bytes], threshold: int, base: Policy = DEFAULT_POLICY) -> None:
        """Raises Invalid("invalid_policy") on a key that is not 32 bytes, unless 1 <= threshold <= len(authorities)."""
        if not authorities or any(type(k) is not bytes or len(k) != KEY_BYTES for k in authorities):
            _fail("authorities", f"must be one or more {KEY_BYTES}-byte public keys")
        _int("threshold", threshold, 1, len(authorities))
        self.authorities = frozenset(authorities)
        self.threshold = threshold
        self.base = validate_policy(base)
        self._proposals: dict[bytes, Proposal] = {}  # with frozen changes
        self._yes: dict[bytes, dict[bytes, tuple[int, bytes]]] = {}  # proposal → voter → earliest (ts_ms, vote id)
        self._no: dict[bytes, set[bytes]] = {}  # proposal → voters who voted approve=False
        self._held: dict[bytes, dict[bytes, Vote]] = {}  # unknown proposal → vote id → vote
        self._effective: dict[bytes, int] = {}  # adopted proposal → effective_ms
        self._reported: dict[bytes, int] = {}  # proposal → effective_ms already reported
        # The fold, cached: effective_ms and the policy after each applied adoption. None = stale.
        self._fold_ms: list[int] | None = None
        self._fold_policies: list[Policy] = []
        self._rejected: list[Rejection] = []

    def _require_authority(self, key: bytes, role: str) -> None:
        if key not in self.authorities:
            raise Forbidden("not_authority", f"the {role} {bytes(key).hex()} is not a governance authority")

    def propose(self, p: Proposal) -> None:
        """Record a proposal; a known id is a no-op. Raises Forbidden("not_authority"), Invalid("invalid_policy")."""
        self._require_authority(p.proposer, "proposer")
        check(type(p.id) is bytes and len(p.id) == KEY_BYTES, "a proposal id is a 32-byte event id")
        check(all(type(t) is int for t in (p.ts_ms, p.activate_at_ms, p.expires_at_ms)), "proposal times are ints")
        if p.activate_at_ms < p.ts_ms:
            _fail("activate_at", f"{p.activate_at_ms} is before the proposal was made ({p.ts_ms})")
        if p.expires_at_ms < p.ts_ms:
            _fail("expires_at", f"{p.expires_at_ms} is before the proposal was made ({p.ts_ms})")
        apply_changes(self.base, p.changes)  # the dry run: the base never changes, so neither does the answer
        frozen = replace(p, changes=_freeze(p.changes))
        known = self._proposals.get(p.id)
        if known is not None:
            check(known == frozen, "one event id names one proposal")
            return
        self._proposals[p.id] = frozen
        for v in sorted(self._held.pop(p.id, {}).values(), key=lambda v: v.id):
            if v.ts_ms <= frozen.expires_at_ms:  # an expired held vote is dropped: it would have raised
                self._count(frozen, v)

    def vote(self, v: Vote, *, hold_unknown: bool = False) -> None:
        """Record a vote; duplicates count once.

        Raises Forbidden("not_authority"), Conflict("proposal_expired") if v.ts_ms > expires_at_ms,
        and NotFound("proposal_not_found") unless hold_unknown, which holds the vote until the
        proposal arrives (for replicated records, which may outrun their proposal).
        """
        self._require_authority(v.voter, "voter")
        check(type(v.ts_ms) is int and type(v.approve) is bool, "a vote has an int ts_ms and a bool approve")
        p = self._proposals.get(v.proposal)
        if p is None:
            if not hold_unknown:
                raise NotFound("proposal_not_found", f"no proposal {bytes(v.proposal).hex()}")
            self._held.setdefault(v.proposal, {})[v.id] = v
            return
        if v.ts_ms > p.expires_at_ms:
            raise Conflict("proposal_expired",
                           f"the vote at {v.ts_ms} is after the proposal expired at {p.expires_at_ms}")
        self._count(p, v)

    def _count(self, p: Proposal, v: Vote) -> None:
        if not v.approve:
            self._no.setdefault(p.id, set()).add(v.voter)
            return
        yes = self._yes.setdefault(p.id, {})
        if v.voter in yes and yes[v.voter] <= (v.ts_ms, v.id):
            return
        yes[v.voter] = (v.ts_ms, v.id)
        if len(yes) < self.threshold:
            return
        stamps = sorted((ts, voter) for voter, (ts, _) in yes.items())
        effective = max(p.activate_at_ms, stamps[self.threshold - 1][0])
        previous = self._effective.get(p.id)
        if previous != effective:
            # Pair check (P4) of rule 3: approvals only accumulate, so the time only moves earlier.
            check(previous is None or effective < previous, "an adoption's effective time only moves earlier")
            self._effective[p.id] = effective
            self._fold_ms = None

    def tally(self, proposal: bytes) -> tuple[int, int]:
        """(approvals, voters who only voted no) of a proposal, each voter counted once."""
        yes = self._yes.get(proposal, {})
        return len(yes), len(self._no.get(proposal, set()) - set(yes))

    def adopted(self) -> list[Adoption]:
        """Every adopted proposal, in (effective_ms, proposal id) order."""
        return [Adoption(pid, ms, self._proposals[pid].changes)
                for ms, pid in sorted((ms, pid) for pid, ms in self._effective.items())]

    def new_adoptions(self) -> list[Adoption]:
        """The adoptions not reported before, or whose effective time moved since; each reported once."""
        out = [a for a in self.adopted() if self._reported.get(a.proposal) != a.effective_ms]
        for a in out:
            self._reported[a.proposal] = a.effective_ms
        return out

    def mark_reported(self, proposal: bytes, effective_ms: int) -> None:
        """Note a `governance.policy.updated` record already in the node's log (say, on restart)."""
        self._reported[proposal] = min(effective_ms, self._reported.get(proposal, effective_ms))

    def _refold(self) -> None:
        fold_ms: list[int] = []
        policies: list[Policy] = []
        rejected = []
        policy = self.base
        for a in self.adopted():
            try:
                policy = apply_changes(policy, a.changes)
            except Invalid as e:
                rejected.append(Rejection(a.proposal, a.effective_ms, e.message))
                continue
            fold_ms.append(a.effective_ms)
            policies.append(policy)
        self._fold_ms, self._fold_policies, self._rejected = fold_ms, policies, rejected

    def policy_at(self, at_ms: int) -> Policy:
        """The policy in force at at_ms: the base with every adoption effective by then applied.

        The fold reruns only when an adoption appears or moves; otherwise this is one bisect.
        """
        if self._fold_ms is None:
            self._refold()
        check(self._fold_ms is not None, "the fold is computed")
        i = bisect_right(self._fold_ms or [], at_ms)
        return self._fold_policies[i - 1] if i else self.base

    def policy_span(self, at_ms: int) -> tuple[int, int]:
        """[from, until) ms around at_ms in which policy_at answers the same policy (until a record changes it)."""
        if self._fold_ms is None:
            self._refold()
        fold = self._fold_ms or []
        i = bisect_right(fold, at_ms)
        return (fold[i - 1] if i else 0, fold[i] if i < len(fold) else INT_MAX)

    def rejected(self) -> list[Rejection]:
        """The adoptions the fold skipped, in (effective_ms, proposal id) order, with why."""
        if self._fold_ms is None:
            self._refold()
        return list(self._rejected)

    def active_bursts(self, scope: str, scope_id: str, metric: str, at_ms: int) -> int:
        """The burst factor (%) in force for this scope and metric at at_ms: the largest active one, or 100."""
        return self.policy_at(at_ms).burst_pct(scope, scope_id, metric, at_ms)
