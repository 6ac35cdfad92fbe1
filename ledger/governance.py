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

The policy's parameters, defaults, validation and change grammar are in ledger/governed.py.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from ledger.errors import Conflict, Forbidden, Invalid, NotFound, check
from ledger.governed import (  # noqa: F401  (re-exported: the policy's public names stay importable from here)
    BURST_MS_MAX,
    BURST_PCT_MAX,
    BURST_PCT_MIN,
    BURSTS_PER_CHANGE_MAX,
    DEFAULT_BUDGETS,
    DEFAULT_POLICY,
    DEFAULT_PRICES,
    DEFAULT_REPUTATION_TIERS,
    DEFAULT_STAKE_TIERS,
    INT_MAX,
    KEY_BYTES,
    KINDS,
    PCT_MAX,
    PRICES_MAX,
    TIER_TERM_MAX,
    TIERS_MAX,
    Budget,
    Burst,
    FrozenMap,
    Policy,
    Tier,
    _fail,
    _freeze,
    _int,
    apply_changes,
    validate_policy,
)


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
