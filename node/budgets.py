"""The budget book: policy state, usage counters and run reservations, owned by the writer thread.

Theory of operation. Every input is an event in the log, so the book is a fold:
policy records (registrations, plans, stakes, suspensions, governance) and run
records rebuild it at start-up, and every admitted event updates it in the same
writer-thread step that appends it. `admit(event)` decides an event against
the book; it raises the LedgerError that rejects it, or returns what the
receipt reports and what the transaction must also write (counter deltas,
alerts, the node's own records). Usage counters live in `usage_counters`,
cached here for the windows in use; a counter missing from the cache is read
from SQLite once.

The decision rules themselves are pure (`ledger.budget`, `ledger.plans`,
`ledger.multipliers`, `ledger.reputation`, `ledger.governance`); this module
only holds state and looks things up.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from ledger import budget as rules_mod
from ledger.constants import COUNTER_MAX
from ledger.budget import Bucket, Overage, Rule, charges, evaluate, status
from ledger.errors import Conflict, Forbidden, Invalid, LedgerError, OverBudget
from ledger.events import Event, charged_agent, is_metered, unsigned_event
from ledger.governance import Governance, Policy, Proposal, Vote
from ledger.multipliers import effective_limit, reputation_multiplier, stake_multiplier
from ledger.plans import QUOTA_METRICS, plan_named
from ledger.pricing import estimate_milli, llm_cost_milli
from ledger.policy import AUTHORITY_KINDS, NODE_KINDS, ORACLE_KINDS, RUN_KINDS
from ledger.reputation import Rating, anomaly_penalty_milli, performance_trust, score_ppm
from ledger.readgrants import GRANT_KINDS, Grants
from ledger.scoped import OWNER_KINDS, OwnerBudget, OwnerBudgets, from_record
from ledger.windows import DAY_MS, window_bounds
from ledger import escrow as escrow_rules
from node.escrow import EscrowBook
from node.store import budgets as budget_store
from node.store import meter as meter_store
from node.store.meter import OpenCall
from node.store.sqlite import Connection

logger = logging.getLogger("ats.budgets")

METERING = ("act", "dat", "cpt", "trt")
RUN_TIMEOUT_MS_MAX = 24 * 3_600_000
RULE_CACHE_SCOPES_MAX = 50_000
MANUAL_SUSPENSION_RETRY_MS = 3_600_000


def trust_penalty(agent: bytes, severity: int = 1) -> tuple[str, dict[str, Any]]:
    """The node's TRT record for a usage anomaly (a suspension, a spike): lowers the agent's trust.

    The node rates the agent in the log like any issuer, so every node that
    holds the record computes the same score.
    """
    return ("trt", {"subject": agent, "type": "compliance", "value": anomaly_penalty_milli(severity),
                    "halflife": 7 * 86_400})


@dataclass
class Registration:
    user: str
    team: str
    platform: str
    plan: str
    max_tokens_per_run: int | None = None
    max_cost_per_run: int | None = None
    max_parallel_runs: int | None = None
    allowed_tools: tuple[str, ...] | None = None


@dataclass
class Run:
    run: bytes
    agent: bytes
    chain: list[tuple[str, str]]
    reserved: int
    spent: int
    tokens: int
    expires_ms: int
    open: bool = True
    local: bool = True  # admitted here (strict mode holds it against this node's rights); False: a peer's

    @property
    def hold(self) -> int:
        return max(0, self.reserved - self.spent) if self.open else 0


@dataclass
class Suspension:
    start_ms: int
    until_ms: int | None  # None: until lifted
    reason: str
    metric: str


@dataclass
class Admitted:
    """What an admitted event adds to its transaction and its receipt."""

    budgets: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] | None = None
    deltas: dict[tuple[str, str, str, str, int], int] = field(default_factory=dict)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    node_records: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    settled_calls: list[bytes] = field(default_factory=list)  # open calls (node/store/meter.py) this settles

    def merge(self, other: "Admitted") -> None:
        """Add another event's writes to this batch's (receipt parts are per event)."""
        for key, amount in other.deltas.items():
            self.deltas[key] = self.deltas.get(key, 0) + amount
        self.alerts.extend(other.alerts)
        self.node_records.extend(other.node_records)
        self.settled_calls.extend(other.settled_calls)


def call_amounts(call: OpenCall) -> dict[str, int]:
    """What an open call holds against each metric until it is settled: its worst case."""
    if call.kind == "llm":
        return {"act.cost": call.cost, "act.llm_tokens": call.tokens, "events": 1}
    return {"act.cost": call.cost, "act.runs": 1, "events": 3}  # a task: one run; its act, cpt and dat


class BudgetBook:
    def __init__(self, *, node_key: bytes, authorities: tuple[bytes, ...], oracles: tuple[bytes, ...],
                 threshold: int, unregistered: str, default_plan: str, enforce: bool, escrow: EscrowBook | None = None,
                 meters: tuple[bytes, ...] = (), team_admins: tuple[tuple[str, bytes], ...] = ()):
        # strict mode (node/escrow.py): the same EscrowBook survives a reload, with its want callback
        self.escrow = escrow or EscrowBook(node_key, strict=(), members=())
        self._args = dict(node_key=node_key, authorities=authorities, oracles=oracles, threshold=threshold,
                          unregistered=unregistered, default_plan=default_plan, enforce=enforce, escrow=self.escrow,
                          meters=meters, team_admins=team_admins)
        self.node_key = node_key
        # keys that may sign metered events naming another agent (PROTOCOL.md §6): this node, and configured meters
        self.meters = frozenset(meters) | {node_key}
        self.calls: dict[bytes, tuple[OpenCall, list[tuple[str, str]]]] = {}  # open metered calls, by call id
        self.call_holds: dict[tuple[str, str, str], int] = {}  # (scope, scope_id, metric) -> held by open calls
        self.authorities = frozenset(authorities)
        self.oracles = frozenset(oracles)
        self.team_admins = frozenset(team_admins)  # (team, key): may sign owner budgets of that team
        self.owner_budgets = OwnerBudgets()  # budget.set / budget.rm (ledger/scoped.py)
        self.grants = Grants()  # read.grant / read.revoke (ledger/readgrants.py)
        m = threshold or (len(authorities) // 2 + 1 if authorities else 1)
        self.governance = Governance(self.authorities, m) if authorities else Governance(frozenset({node_key}), 1)
        self.unregistered = unregistered
        self.default_plan = default_plan
        self.enforce = enforce
        self.registrations: dict[bytes, Registration] = {}
        self.users: set[bytes] = set()
        self.names: dict[str, bytes] = {}  # readable name -> agent or user key (agent.register)
        self.key_names: dict[bytes, str] = {}
        self.plans: dict[tuple[str, str], str] = {}
        self.stakes: dict[bytes, int] = {}
        self.suspensions: dict[bytes, list[Suspension]] = {}
        self.runs: dict[bytes, Run] = {}
        self.holds: dict[tuple[str, str], int] = {}
        self.counters: dict[tuple[str, str, str, str, int], int] = {}
        self.buckets: dict[tuple[str, str, str, str], Bucket] = {}
        self.reputation: dict[bytes, dict[int, int]] = {}  # agent -> UTC day start -> score ppm
        self.announced: set[bytes] = set()
        self.nodes: set[bytes] = {node_key}  # admitted nodes (node.admit), whose origin logs are merged
        self.version = 0  # bumped by every change to registrations, plans and stakes
        self._rule_cache: dict[tuple[str, str], tuple[tuple, list[Rule]]] = {}
        self.settled: set[tuple[tuple[str, str, str, str], int]] = set()  # debts already penalised here

    @classmethod
    def from_config(cls, config: Any, node_key: bytes) -> "BudgetBook":
        """The book a node with this Config keeps (node/config.py's governance and budget settings)."""
        return cls(
            node_key=node_key,
            authorities=tuple(bytes.fromhex(k) for k in config.authorities),
            oracles=tuple(bytes.fromhex(k) for k in config.oracles),
            threshold=config.governance_threshold,
            unregistered=config.unregistered_agents,
            default_plan=config.default_plan,
            enforce=config.budgets,
            escrow=EscrowBook.from_config(config, node_key),
            meters=tuple(bytes.fromhex(k) for k in getattr(config, "meters", ())),
            team_admins=tuple((t, bytes.fromhex(k)) for t, _, k in (e.partition("=") for e in config.team_admins)),
        )

    # -- start-up ---------------------------------------------------------------------

    def load(self, conn: Connection, now_ms: int) -> None:
        """Rebuild the book from the log's policy and run records (few; a partial index finds them)."""
        for event in budget_store.policy_events(conn, now_ms - RUN_TIMEOUT_MS_MAX):
            if not self._may_sign(event):
                continue  # replicated from a node whose authorities are not ours: ignored live, ignored now
            try:
                self._apply(event, event.ts, replay=True)
            except LedgerError as e:  # recorded once admitted; a later rule change may refuse it now
                logger.warning("policy record %s no longer applies: %s", event.id_hex, e.message)
        self.announced = {a.proposal for a in self.governance.adopted()}
        for call in meter_store.open_calls(conn):
            self._hold_call(call)

    def reload(self, conn: Connection, now_ms: int) -> None:
        """Forget everything and rebuild from the log (after a rolled-back transaction)."""
        self.__init__(**self._args)  # type: ignore[misc]
        self.load(conn, now_ms)

    # -- scopes and rules ------------------------------------------------------------------

    def chain(self, signer: bytes) -> list[tuple[str, str]]:
        """The scopes an event by signer charges: agent, then its user, team and platform."""
        reg = self.registrations.get(signer)
        if reg is None:
            return [("agent", signer.hex())]
        return [("agent", signer.hex()), ("user", reg.user), ("team", reg.team), ("platform", reg.platform)]

    def _plan_of(self, scope: str, scope_id: str) -> str | None:
        explicit = self.plans.get((scope, scope_id))
        if explicit:
            return explicit
        if scope == "agent":
            reg = self.registrations.get(bytes.fromhex(scope_id))
            return reg.plan if reg else self.default_plan
        return None

    def score(self, conn: Connection, agent: bytes, at_ms: int) -> int:
        """Reputation (ppm) as of the start of the UTC day holding at_ms: stable within a day."""
        day = at_ms - at_ms % DAY_MS
        by_day = self.reputation.setdefault(agent, {})
        cached = by_day.get(day)
        if cached is None:
            # |value| is capped at 1000 (one full rating) so no single record can dominate a score
            ratings = [
                Rating(ts_ms=ts, value_milli=max(-1000, min(1000, value)), halflife_s=halflife,
                       issuer_role=self._role(issuer), type=type_)
                for ts, issuer, value, halflife, type_ in budget_store.ratings_about(conn, agent, day)
            ]
            cached = score_ppm(ratings, day)
            by_day.clear()  # only the current day's score is kept
            by_day[day] = cached
        return cached

    def _role(self, issuer: bytes) -> str:
        if issuer == self.node_key or issuer in self.authorities:
            return "system"
        if issuer in self.registrations:
            return "peer"
        return "user"

    def rules(self, conn: Connection, chain: list[tuple[str, str]], at_ms: int) -> list[Rule]:
        """Every rule on the chain's scopes in force at at_ms, with multipliers and bursts applied.

        Rules of a scope are cached: they change only with the policy in force
        (governance), the book's registrations, plans and stakes (`version`),
        the UTC day (reputation is a day-start score) and the bursts in force.
        """
        policy = self.governance.policy_at(at_ms)
        day = at_ms - at_ms % DAY_MS
        out: list[Rule] = []
        for scope, scope_id in chain:
            bursts = tuple(
                i for i, b in enumerate(policy.bursts)
                if b.scope == scope and b.scope_id == scope_id and b.start_ms <= at_ms < b.end_ms
            ) if policy.bursts else ()
            owned = self.owner_budgets.in_force(scope, scope_id, at_ms) if self.owner_budgets.version else ()
            key = (id(policy), self.version, day if scope == "agent" else 0, bursts, owned)
            cached = self._rule_cache.get((scope, scope_id))
            if cached is None or cached[0] != key:
                if len(self._rule_cache) >= RULE_CACHE_SCOPES_MAX:
                    self._rule_cache.clear()
                cached = (key, self._owned(self._scope_rules(conn, policy, scope, scope_id, at_ms), owned, at_ms))
                self._rule_cache[(scope, scope_id)] = cached
            out.extend(cached[1])
        return out

    def _scope_rules(self, conn: Connection, policy: Policy, scope: str, scope_id: str, at_ms: int) -> list[Rule]:
        out: list[Rule] = []
        agent = bytes.fromhex(scope_id) if scope == "agent" else None
        stake = self.stakes.get(agent, 0) if agent else 0
        score = self.score(conn, agent, at_ms) if agent else 0
        stake_tiers, reputation_tiers = policy.stake_table(), policy.reputation_table()
        for kind, b in policy.budgets.items():
            if agent is None:
                # ancestors count every metering kind's metric (visible in balance); their
                # limits come from the plan they are assigned, below
                o = Overage(b.soft_pct, b.hard_pct, b.throttle, False, b.reserve_pct)
                out.append(Rule(scope, scope_id, b.metric, b.window, None, o, kind))
                continue
            base = effective_limit(b.limit, stake, score, stake_tiers=stake_tiers, reputation_tiers=reputation_tiers)
            o = Overage(b.soft_pct, b.hard_pct, b.throttle, b.suspend, b.reserve_pct)
            out.append(self._burst(Rule(scope, scope_id, b.metric, b.window, base, o, kind), at_ms))
        plan_name = self._plan_of(scope, scope_id)
        if plan_name is None:
            return out
        plan = policy.plan(plan_name)
        for quota, (metric, window) in QUOTA_METRICS.items():
            base = plan.limits[quota]
            if agent is not None:
                base = effective_limit(base, stake, score, stake_tiers=stake_tiers, reputation_tiers=reputation_tiers)
            out.append(self._burst(Rule(scope, scope_id, metric, window, base, rules_mod.PLAN_QUOTA_OVERAGE, quota), at_ms))
        return out

    def _owned(self, rules: list[Rule], owned: tuple[OwnerBudget, ...], at_ms: int) -> list[Rule]:
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
            o = Overage(b.soft_pct, b.hard_pct, b.throttle, b.suspend, b.reserve_pct)
            out.append(self._burst(Rule(b.scope, b.scope_id, b.metric, b.window, b.limit, o, "budget.set"), at_ms))
        return out

    def _burst(self, rule: Rule, at_ms: int) -> Rule:
        factor = self.governance.active_bursts(rule.scope, rule.scope_id, rule.metric, at_ms)
        if factor == 100 or rule.limit is None:
            return rule
        return Rule(rule.scope, rule.scope_id, rule.metric, rule.window, rule.limit * factor // 100, rule.overage, rule.source)

    # -- counters ---------------------------------------------------------------------------

    def consumed(self, conn: Connection, key: tuple[str, str, str, str, int]) -> int:
        value = self.counters.get(key)
        if value is None:
            value = budget_store.counter(conn, key)
            self.counters[key] = value
        return value

    # -- admission ----------------------------------------------------------------------------

    def authorize(self, ev: Event) -> None:
        """Policy records only from their signers (ledger.policy), metered events only from meters; raises Forbidden."""
        if is_metered(ev) and ev.signer not in self.meters:
            raise Forbidden("not_meter", "only this node or a configured meter may sign an event naming the agent charged")
        if ev.kind in AUTHORITY_KINDS and ev.signer not in self.authorities:
            raise Forbidden("not_authority", f"{ev.kind} must be signed by a governance authority of this node")
        if ev.kind in ORACLE_KINDS and ev.signer not in self.oracles:
            raise Forbidden("not_authority", f"{ev.kind} must be signed by an oracle of this node")
        if ev.kind in NODE_KINDS and ev.signer != self.node_key:
            raise Forbidden("not_authority", f"{ev.kind} records are written by nodes, not submitted")
        if ev.kind in GRANT_KINDS and ev.signer not in self.authorities:
            raise Forbidden("not_authority", f"{ev.kind} must be signed by a governance authority of this node")
        if ev.kind in OWNER_KINDS and not self._may_sign(ev):
            raise Forbidden("not_authority", f"{ev.kind} must be signed by a governance authority of this node,"
                            " or for a team's own budget by one of its team_admins")
        if ev.kind == "escrow.transfer" and ev.signer != self.node_key:
            raise Forbidden("not_authority", "escrow.transfer records are written by the node that gives, not submitted")

    def _may_sign(self, ev: Event) -> bool:
        """Whether ev's signer may sign a record of its kind here (metering kinds: anyone)."""
        if ev.kind in AUTHORITY_KINDS:
            return ev.signer in self.authorities
        if ev.kind in ORACLE_KINDS:
            return ev.signer in self.oracles
        if ev.kind in NODE_KINDS:
            return ev.signer in self.nodes
        if ev.kind in GRANT_KINDS:
            return ev.signer in self.authorities
        if ev.kind in OWNER_KINDS:
            b = ev.body
            return ev.signer in self.authorities or (b.scope == "team" and (b.id, ev.signer) in self.team_admins)
        return True

    def observe(self, conn: Connection, ev: Event, now_ms: int, origin: bytes | None = None) -> dict[tuple[str, str, str, str, int], int]:
        """Fold a replicated event (another origin's, verified, held nowhere yet) into the book.

        Nothing is decided: the origin admitted it. Policy records count only
        when their signer may sign them (a node's records: an admitted node);
        usage is charged to the same counters admission uses. Returns the
        counter deltas to write with the entry.
        """
        if ev.kind == "escrow.transfer":
            return self.escrow.receive(self, conn, ev)  # strict mode: rights given to this node, merged
        if not self._may_sign(ev):
            return {}
        if ev.kind not in METERING and ev.kind not in RUN_KINDS:
            try:
                self._apply(ev, now_ms, replay=True)
            except LedgerError as e:
                logger.info("replicated %s %s does not apply here: %s", ev.kind, ev.id_hex, e.message)
            return {}
        if ev.kind == "trt":
            self.reputation.pop(ev.body.subject, None)
            self._rule_cache.pop(("agent", ev.body.subject.hex()), None)
        metered = is_metered(ev)
        if metered and ev.signer != origin and ev.signer not in self.meters:
            logger.info("replicated %s %s names an agent but its signer is neither its origin nor a meter: not counted",
                        ev.kind, ev.id_hex)
            return {}
        if ev.signer in self.nodes and not metered:
            return {}  # nodes' own trust records are not metered
        if ev.kind in RUN_KINDS:
            self._replay_run(ev)
            if ev.kind == "run.reserve" and ev.body.run in self.runs:
                self.runs[ev.body.run].local = False  # another node's reservation holds its rights, not ours
        deltas: dict[tuple[str, str, str, str, int], int] = {}
        for key, (_rule, spend) in self._charged(conn, ev).items():
            # the origin admitted it: counted, saturating at the largest counter this node keeps
            before = self.consumed(conn, key)
            self.counters[key] = min(COUNTER_MAX, before + spend)
            deltas[key] = self.counters[key] - before
        return deltas

    def _charged(self, conn: Connection, ev: Event) -> dict[tuple[str, str, str, str, int], tuple[Rule, int]]:
        """The counters a metered event charges (each once): key -> (its rule, the spend)."""
        consume = self.charges(ev)
        out: dict[tuple[str, str, str, str, int], tuple[Rule, int]] = {}
        for rule in self.rules(conn, self.chain(charged_agent(ev)), ev.ts):
            spend = consume.get(rule.metric, 0)
            if spend:
                out.setdefault(rule.key + (window_bounds(rule.window, ev.ts)[0],), (rule, spend))
        return out

    def replay_own(self, conn: Connection, ev: Event) -> dict[tuple[str, str, str, str, int], int]:
        """Fold an event of this node's own log (admitted once, now replayed) into the book, and
        return the counter deltas its admission wrote: `ats verify-db` recomputes the counters so.

        The same keys as `admit` (each rule's window holding ev.ts, the spend of its metric, the
        strict `@own` counters) and `escrow.give`'s `@given`, without deciding anything.
        """
        if ev.kind == "escrow.transfer":
            return {EscrowBook.counter(ev.body.key, escrow_rules.GIVEN): ev.body.amount}
        if ev.kind not in METERING:
            try:
                self._apply(ev, ev.ts, replay=True)
            except LedgerError:
                pass  # refused on replay as at start-up (load); it was admitted then
            if ev.kind not in RUN_KINDS:
                return {}
        if ev.kind == "trt":
            self.reputation.pop(ev.body.subject, None)
            self._rule_cache.pop(("agent", ev.body.subject.hex()), None)
        if ev.signer == self.node_key and not is_metered(ev):
            return {}  # the node's own trust records are not metered
        deltas: dict[tuple[str, str, str, str, int], int] = {}
        for key, (rule, spend) in self._charged(conn, ev).items():
            deltas[key] = spend
            if self.enforce and rule.limit is not None and self.escrow.is_strict(rule):
                deltas[EscrowBook.counter(key, escrow_rules.OWN)] = spend
        return deltas

    def admit(self, conn: Connection, ev: Event, now_ms: int, *, dry_run: bool = False) -> tuple[Admitted, LedgerError | None]:
        """Decide ev against the book and apply it if admitted: (what to write, the rejection or None).

        Raises the LedgerError of a record that is invalid whatever the budgets
        (not an authority, unknown run, run limits). With dry_run nothing moves:
        the answer of POST /v1/quota/check.
        """
        self.authorize(ev)
        out = Admitted()
        if ev.kind == "escrow.transfer":
            # this node gives rights away: holder-only and spare, debited in this transaction
            if not dry_run:
                out.deltas.update(self.escrow.give(self, conn, ev, self.local_held(ev.body.key)))
            return out, None
        if ev.kind not in METERING and ev.kind not in RUN_KINDS:
            if not dry_run:
                self._apply(ev, now_ms, out=out)
            return out, None
        if ev.kind == "trt" and not dry_run:
            # a late rating may change a score already computed for its subject
            self.reputation.pop(ev.body.subject, None)
            self._rule_cache.pop(("agent", ev.body.subject.hex()), None)
        # a metered event (PROTOCOL.md §6) records work already done: it charges the agent it
        # names, settles the call it closes, and is never refused for budget (it may suspend)
        metered = is_metered(ev)
        subject = charged_agent(ev)
        if ev.signer == self.node_key and not metered:
            return out, None  # the node's own trust records are not metered
        if not metered and ev.kind != "trt" and ev.signer not in self.registrations and self.unregistered == "refuse":
            raise Invalid("unknown_agent", "this agent has no agent.register record and the node refuses unregistered agents")
        if metered:
            self._check_price(ev)
        chain = self.chain(subject)
        if self.enforce and not metered:
            self._check_suspended(subject, now_ms)
        if metered and not dry_run:
            self._settle_call(ev.nonce, out)
        run = self._run_precheck(ev, chain, now_ms)
        consume = self.charges(ev)
        hold_delta = self._hold_delta(ev, run)
        rules = self.rules(conn, chain, ev.ts)
        bounds: dict[str, tuple[int, int]] = {}
        checked: list[tuple[Rule, tuple, int, int, int, int, list[str]]] = []
        strict_spends: list[tuple[tuple[str, str, str, str, int], int]] = []
        for rule in rules:
            metric = rule.metric
            spend = consume.get(metric, 0)
            amount = spend + hold_delta if metric == "act.cost" else spend
            if amount <= 0 and not spend:
                continue
            window = bounds.get(rule.window)
            if window is None:
                window = bounds[rule.window] = window_bounds(rule.window, ev.ts)
            key = rule.key + (window[0],)
            consumed = self.counters.get(key)
            if consumed is None:
                consumed = self.consumed(conn, key)
            if consumed + spend > COUNTER_MAX:
                # the sum this node keeps for the window would leave int64 (ledger.constants): refused
                raise Invalid("amount_out_of_range", f"{rule.scope} {rule.metric} per {rule.window} would pass"
                              f" {COUNTER_MAX}, the largest usage counter this node keeps")
            held = self.held(rule.scope_key, metric)
            flags: list[str] = []
            strict = rule.limit is not None and self.escrow.is_strict(rule)
            if self.enforce and strict:
                # strict mode: only against the rights this node holds (node/escrow.py)
                local = self.local_held(key, run, hold_delta)
                refusal = self.escrow.decide(self, conn, key, local, spend)[0]
                if refusal is not None and not metered:
                    return out, self._spent_or(refusal, rule, consumed, held, amount, now_ms, window[1])
                strict_spends.append((key, spend))
            if rule.limit is not None:
                # optimistic mode: the union's overspend of the previous window is a debt counted here
                debt = 0 if strict else self._debt(conn, rule, window[0], dry_run, out)
                verdict = evaluate(rule, consumed + debt, held, max(0, amount), now_ms, window[1], self.buckets.get(rule.key))
                if verdict.bucket is not None and not dry_run:
                    self.buckets[rule.key] = verdict.bucket
                if not verdict.ok and self.enforce:
                    # only real spending suspends: an estimate that does not fit is just refused
                    if verdict.suspend_until_ms is not None and spend > 0 and not dry_run:
                        self._auto_suspend(subject, rule, verdict.suspend_until_ms, now_ms, out)
                    error = OverBudget(verdict.code, verdict.message, details={"retry_after_ms": verdict.retry_after_ms})
                    if not metered:
                        return out, error
                    verdict.flags.append("over_limit")  # done already: recorded, and the next call is refused
                flags = verdict.flags
            checked.append((rule, key, consumed + spend, spend, held, window[1], flags))
        if dry_run:
            for rule, _key, consumed, _spend, held, end, flags in checked:
                if rule.limit is not None:
                    held_after = held + (hold_delta if rule.metric == "act.cost" else 0)
                    out.budgets.append(self._budget_view(rule, consumed, held_after, end, flags))
            if run is not None and ev.kind == "run.reserve":
                out.run = {"run": run.run.hex(), "state": "estimate", "reserved": run.reserved, "expires": run.expires_ms}
            return out, None
        # admitted: counters, holds and runs move; the receipt reports every limit it touched
        deltas = out.deltas
        for _rule, key, consumed, spend, _held, _end, _flags in checked:
            if spend and key not in deltas:
                self.counters[key] = consumed
                deltas[key] = spend
        for key, spend in strict_spends:
            own = EscrowBook.counter(key, escrow_rules.OWN)  # consumed from this node's own rights
            if spend and own not in deltas:
                self.counters[own] = self.consumed(conn, own) + spend
                deltas[own] = spend
        self._apply_run(ev, run, chain, hold_delta, now_ms, out)
        for rule, _key, consumed, _spend, _held, end, flags in checked:
            if rule.limit is None:
                continue
            held = self.held(rule.scope_key, rule.metric)
            out.budgets.append(self._budget_view(rule, consumed, held, end, flags))
            if flags:
                for flag, alert in (("soft_crossed", "soft_limit"), ("hard_crossed", "hard_limit"), ("reserve", "reserve")):
                    if flag in flags and (alert != "reserve" or "hard_crossed" in flags):
                        out.alerts.append(self._alert(alert, rule, now_ms, {"consumed": consumed, "limit": rule.limit}))
        return out, None

    @staticmethod
    def _spent_or(refusal: LedgerError, rule: Rule, consumed: int, held: int, amount: int, now_ms: int,
                  window_end_ms: int) -> LedgerError:
        """Strict mode: "ask again soon" (no_rights, short Retry-After) only while the cluster has
        room; when the merged use already leaves no room for this event, the budget is spent until
        the window ends (budget_exceeded, Retry-After to the window's end), as in optimistic mode."""
        verdict = evaluate(rule, consumed, held, max(0, amount), now_ms, window_end_ms, None)
        if verdict.ok or verdict.code != "budget_exceeded":
            return refusal
        return OverBudget("budget_exceeded", verdict.message + " across the cluster (strict mode)",
                          details={"retry_after_ms": verdict.retry_after_ms})

    def _budget_view(self, rule: Rule, consumed: int, held: int, window_end: int, flags: list[str]) -> dict[str, Any]:
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

    def _alert(self, type_: str, rule: Rule, now_ms: int, detail: dict[str, Any]) -> dict[str, Any]:
        return {"ts_ms": now_ms, "type": type_, "scope": rule.scope, "scope_id": rule.scope_id,
                "metric": rule.metric, "detail": json.dumps(detail, sort_keys=True)}

    # -- suspensions --------------------------------------------------------------------------

    def suspended_agents(self, now_ms: int) -> set[bytes]:
        """The agents suspended at now_ms (by the node or by an authority)."""
        return {a for a in self.suspensions if self._active_suspension(a, now_ms) is not None}

    def _active_suspension(self, agent: bytes, now_ms: int) -> Suspension | None:
        for s in self.suspensions.get(agent, ()):
            if s.until_ms is None or s.until_ms > now_ms:
                return s
        return None

    def _check_suspended(self, agent: bytes, now_ms: int) -> None:
        s = self._active_suspension(agent, now_ms)
        if s is not None:
            retry = MANUAL_SUSPENSION_RETRY_MS if s.until_ms is None else s.until_ms - now_ms
            until = "until an authority lifts it" if s.until_ms is None else f"until {s.until_ms} ms"
            raise OverBudget("suspended", f"agent is suspended {until}: {s.reason}", details={"retry_after_ms": retry})

    def _auto_suspend(self, agent: bytes, rule: Rule, until_ms: int, now_ms: int, out: Admitted) -> None:
        current = self._active_suspension(agent, now_ms)
        if current is not None and (current.until_ms is None or current.until_ms >= until_ms):
            return
        reason = f"hard limit of {rule.metric} per {rule.window} reached"
        self.suspensions.setdefault(agent, []).append(Suspension(now_ms, until_ms, reason, rule.metric))
        out.node_records.append(("agent.suspended", {"agent": agent, "metric": rule.metric, "until": until_ms, "reason": reason}))
        out.node_records.append(trust_penalty(agent))
        out.alerts.append(self._alert("suspended", rule, now_ms, {"until": until_ms, "reason": reason}))

    # -- runs -----------------------------------------------------------------------------------

    # -- metered calls (the LLM gateway, the task meter) ----------------------------------------

    def held(self, scope_key: tuple[str, str], metric: str) -> int:
        """What open runs (act.cost) and open metered calls (their worst case) hold of a scope's metric."""
        runs = self.holds.get(scope_key, 0) if metric == "act.cost" else 0
        return runs + self.call_holds.get(scope_key + (metric,), 0)

    def charges(self, ev: Event) -> dict[str, int]:
        """ledger.budget.charges, with an LLM call's cost priced from the table in force at its ts."""
        out = charges(ev)
        if is_metered(ev) and ev.kind == "act" and ev.body.model is not None:
            out["act.cost"] = self.llm_price(ev.body.model, ev.body.tokens_in, ev.body.tokens_out, ev.ts)
        return out

    def llm_price(self, model: str, tokens_in: int, tokens_out: int, at_ms: int) -> int:
        """An LLM call's cost in milli-T from the governed price table in force at at_ms."""
        return llm_cost_milli(self.governance.policy_at(at_ms).prices, model, tokens_in, tokens_out)

    def _check_price(self, ev: Event) -> None:
        if ev.kind == "act" and ev.body.model is not None:
            want = self.llm_price(ev.body.model, ev.body.tokens_in, ev.body.tokens_out, ev.ts)
            if ev.body.cost != want:
                raise Invalid("cost_mismatch", f"an LLM call's cost is {want} milli-T at the prices in force at its ts, not {ev.body.cost}")

    def _hold_call(self, call: OpenCall) -> None:
        chain = self.chain(call.agent)
        self.calls[call.call] = (call, chain)
        for scope in chain:
            for metric, amount in call_amounts(call).items():
                key = scope + (metric,)
                self.call_holds[key] = self.call_holds.get(key, 0) + amount

    def _settle_call(self, call_id: bytes, out: Admitted) -> None:
        entry = self.calls.pop(call_id, None)
        if entry is None:
            return
        call, chain = entry
        for scope in chain:
            for metric, amount in call_amounts(call).items():
                key = scope + (metric,)
                left = self.call_holds.get(key, 0) - amount
                if left > 0:
                    self.call_holds[key] = left
                else:
                    self.call_holds.pop(key, None)
        out.settled_calls.append(call_id)

    def reserve_call(self, conn: Connection, call: OpenCall, now_ms: int,
                     persist: bool = True) -> tuple[Admitted, LedgerError | None]:
        """Hold a call's worst case against every budget of its agent and scopes, or say why not.

        The decision is the admission of an event charging that worst case, with every other
        open call's hold counted (so concurrent calls are never admitted beyond budget + reserve);
        admitted, the hold is persisted (meter_calls) before the call goes out, here or (persist
        False) by the caller, which then owns releasing the hold if it cannot. Writer thread only.
        """
        body: dict[str, Any] = {"op": "llm.call" if call.kind == "llm" else "agent.run", "cost": call.cost}
        if call.kind == "llm":
            body["units"] = call.tokens
        else:
            reg = self.registrations.get(call.agent)
            if reg is not None and reg.max_cost_per_run is not None and call.cost > reg.max_cost_per_run:
                raise Invalid("run_limit_exceeded", f"estimated cost {call.cost} is over max_cost_per_run {reg.max_cost_per_run}")
        probe = unsigned_event("act", call.agent, now_ms, body)
        out, refusal = self.admit(conn, probe, now_ms, dry_run=True)
        if refusal is not None:
            return out, refusal
        if persist:
            meter_store.insert_calls(conn, [call])
        self._hold_call(call)
        return out, None

    def drop_holds(self, calls: list[OpenCall]) -> None:
        """Forget holds whose reservations could not be persisted (the batch rolled back)."""
        out = Admitted()
        for call in calls:
            self._settle_call(call.call, out)

    def max_cost_per_run(self, agent: bytes) -> int | None:
        """The agent's registered max_cost_per_run (milli-T), if any."""
        reg = self.registrations.get(agent)
        return reg.max_cost_per_run if reg is not None else None

    def prices_at(self, at_ms: int) -> dict[str, int]:
        """The governed price table in force at at_ms (milli-T per unit)."""
        return dict(self.governance.policy_at(at_ms).prices)

    def release_call(self, conn: Connection, call_id: bytes) -> None:
        """Forget a call that charges nothing (refused or failed upstream before any work)."""
        out = Admitted()
        self._settle_call(call_id, out)
        meter_store.delete_calls(conn, [call_id])

    def estimate(self, op: str, tokens: int, at_ms: int) -> int:
        """A run's cost estimate in milli-T from the pricing table (milli-T per unit)."""
        return estimate_milli(self.governance.policy_at(at_ms).prices, op, tokens)

    def _open_run(self, ev: Event, now_ms: int) -> Run:
        run = self.runs.get(ev.body.run)
        if run is None or not run.open or run.agent != ev.signer:
            raise Invalid("unknown_run", "no open run with this id for this agent (never reserved, already posted or voided)")
        if run.expires_ms <= now_ms:
            run.open = False
            self._release(run)
            raise Invalid("unknown_run", "this run's reservation expired")
        return run

    def _run_precheck(self, ev: Event, chain: list[tuple[str, str]], now_ms: int) -> Run | None:
        """Validate a run record against the agent's run limits; the run it touches, if any."""
        self._expire_runs(ev.signer, now_ms)
        if ev.kind == "run.reserve":
            body = ev.body
            if body.run in self.runs:
                raise Conflict("run_exists", "a run with this id was already reserved")
            if not 0 < body.timeout <= RUN_TIMEOUT_MS_MAX:
                raise Invalid("invalid_body", f"timeout must be 1..{RUN_TIMEOUT_MS_MAX} ms")
            cost = body.cost if body.cost is not None else self.estimate(body.op, body.tokens, ev.ts)
            reg = self.registrations.get(ev.signer)
            if reg is not None:
                if reg.allowed_tools is not None and not set(body.tools or ()) <= set(reg.allowed_tools):
                    denied = sorted(set(body.tools or ()) - set(reg.allowed_tools))
                    raise Invalid("tool_not_allowed", f"tools not allowed for this agent: {', '.join(denied)}")
                if reg.max_tokens_per_run is not None and body.tokens > reg.max_tokens_per_run:
                    raise Invalid("run_limit_exceeded", f"{body.tokens} tokens is over max_tokens_per_run {reg.max_tokens_per_run}")
                if reg.max_cost_per_run is not None and cost > reg.max_cost_per_run:
                    raise Invalid("run_limit_exceeded", f"estimated cost {cost} is over max_cost_per_run {reg.max_cost_per_run}")
                open_runs = [r for r in self.runs.values() if r.open and r.agent == ev.signer]
                if reg.max_parallel_runs is not None and len(open_runs) >= reg.max_parallel_runs:
                    retry = min(r.expires_ms for r in open_runs) - now_ms if open_runs else 1000
                    raise OverBudget("too_many_runs", f"{len(open_runs)} runs open, max_parallel_runs is {reg.max_parallel_runs}",
                                     details={"retry_after_ms": max(1, retry)})
            return Run(body.run, ev.signer, chain, cost, 0, 0, ev.ts + body.timeout)
        if ev.kind in ("run.charge", "run.post", "run.void"):
            return self._open_run(ev, now_ms)
        return None

    def _hold_delta(self, ev: Event, run: Run | None) -> int:
        if run is None:
            return 0
        if ev.kind == "run.reserve":
            return run.reserved
        if ev.kind == "run.charge":
            return max(0, run.reserved - run.spent - ev.body.cost) - run.hold
        return -run.hold  # post, void

    def _release(self, run: Run, amount: int | None = None) -> None:
        amount = run.hold if amount is None else amount
        for scope in run.chain:
            self.holds[scope] = self.holds.get(scope, 0) - amount

    def _debt(self, conn: Connection, rule: Rule, start_ms: int, dry_run: bool, out: Admitted) -> int:
        """The overspend of rule's previous window over the union of origins (docs/strict.md §optimistic).

        A function of the merged counters alone, so it is idempotent and every node that holds
        the same events carries the same debt. The first time this node sees an agent's debt it
        also lowers the agent's trust with one penalty record (once per node, rule and window).
        """
        prev = window_bounds(rule.window, start_ms - 1)[0]
        used = self.consumed(conn, rule.key + (prev,))
        if not used:
            return 0
        _soft, hard, reserve = rules_mod.thresholds(rule)
        debt = escrow_rules.overspend(used, hard + reserve)
        if debt and rule.scope == "agent" and not dry_run and (rule.key, prev) not in self.settled:
            self.settled.add((rule.key, prev))
            out.node_records.append(trust_penalty(bytes.fromhex(rule.scope_id)))
        return debt

    def local_held(self, key: tuple[str, str, str, str, int], run: Run | None = None, hold_delta: int = 0) -> int:
        """act.cost held by open reservations admitted here, with `run`'s hold moved by hold_delta.

        Strict mode counts them against this node's rights. Runs replayed at start-up count
        as local whatever node admitted them: holding too much is safe, too little is not.
        """
        if key[2] != "act.cost":
            return 0
        scope = (key[0], key[1])
        total = sum(r.hold for r in self.runs.values() if r.open and r.local and r is not run and scope in r.chain)
        total += self.call_holds.get(scope + ("act.cost",), 0)
        if run is not None and scope in run.chain:
            total += max(0, (run.hold if run.run in self.runs else 0) + hold_delta)
        return total

    def _expire_runs(self, agent: bytes, now_ms: int) -> None:
        for run in self.runs.values():
            if run.open and run.agent == agent and run.expires_ms <= now_ms:
                self._release(run)
                run.open = False

    def _apply_run(self, ev: Event, run: Run | None, chain: list, hold_delta: int, now_ms: int, out: Admitted) -> None:
        if run is None:
            return
        for scope in run.chain:
            self.holds[scope] = self.holds.get(scope, 0) + hold_delta
        if ev.kind == "run.reserve":
            self.runs[run.run] = run
        elif ev.kind in ("run.charge", "run.post"):
            run.spent += ev.body.cost
            run.tokens += ev.body.tokens
        if ev.kind in ("run.post", "run.void"):
            run.open = False
        if ev.kind == "run.post" and ev.body.score is not None:
            value = performance_trust(ev.body.score)
            if value is not None:
                out.node_records.append(("trt", {"subject": ev.signer, "type": "reliability", "value": value,
                                                  "halflife": 30 * 86_400}))
        reg = self.registrations.get(ev.signer)
        limit = reg.max_cost_per_run if reg else None
        out.run = {
            "run": run.run.hex(),
            "state": "pending" if run.open else ("posted" if ev.kind == "run.post" else "voided"),
            "reserved": run.reserved,
            "spent": run.spent,
            "held": run.hold,
            "max_cost_per_run": limit,
            "expires": run.expires_ms,
            "stop": bool(run.open and ((limit is not None and run.spent >= limit) or run.spent >= run.reserved)),
        }

    # -- policy records ---------------------------------------------------------------------------

    def _apply(self, ev: Event, now_ms: int, *, out: Admitted | None = None, replay: bool = False) -> None:
        """Fold one policy, governance, node or (on replay) run record into the book."""
        b = ev.body
        if ev.kind == "agent.register":
            plan_named(b.plan)
            named = [(n, k) for n, k in ((b.name, b.agent), (b.user_name, b.user)) if n is not None]
            if b.name is not None and b.name == b.user_name and b.agent != b.user:
                raise Conflict("name_taken", f"name {b.name!r} given to both the agent and its user")
            for n, k in list(named):
                if self.names.get(n, k) != k:
                    if replay:  # a replicated record that lost the race for a name keeps its key only
                        logger.warning("name %s of %s is taken by %s: not applied", n, k.hex(), self.names[n].hex())
                        named.remove((n, k))
                        continue
                    raise Conflict("name_taken", f"name {n!r} is already the name of {self.names[n].hex()}")
            for n, k in named:
                old = self.key_names.get(k)
                if old is not None:
                    self.names.pop(old, None)
                self.names[n] = k
                self.key_names[k] = n
            self.registrations[b.agent] = Registration(
                b.user.hex(), b.team, b.platform, b.plan, b.max_tokens_per_run, b.max_cost_per_run,
                b.max_parallel_runs, b.allowed_tools,
            )
            self.users.add(b.user)
            self.version += 1
        elif ev.kind == "plan.assign":
            plan_named(b.plan)
            self.plans[(b.scope, b.id)] = b.plan
            self.version += 1
        elif ev.kind == "stake.set":
            self.stakes[b.agent] = b.amount
            self.version += 1
        elif ev.kind == "node.admit":
            self.nodes.add(b.node)
        elif ev.kind in GRANT_KINDS:
            self.grants.apply(ev.kind, b, ev.ts)  # raises before anything moves
        elif ev.kind in OWNER_KINDS:
            record = from_record(ev.kind, b, ev.ts, ev.id, ev.signer)  # raises before anything moves
            if not replay:
                self.owner_budgets.check(record)
            self.owner_budgets.add(record)
        elif ev.kind == "agent.suspend":
            self.suspensions.setdefault(b.agent, []).append(Suspension(ev.ts, None, b.reason, "*"))
            if out is not None:
                out.alerts.append({"ts_ms": now_ms, "type": "suspended", "scope": "agent", "scope_id": b.agent.hex(),
                                   "metric": "*", "detail": json.dumps({"reason": b.reason, "by": ev.signer.hex()})})
        elif ev.kind == "agent.suspended":
            self.suspensions.setdefault(b.agent, []).append(Suspension(ev.ts, b.until, b.reason, b.metric))
        elif ev.kind == "agent.lift":
            before = self.suspensions.get(b.agent, [])
            self.suspensions[b.agent] = [s for s in before if s.start_ms > ev.ts]
            for key in [k for k in self.buckets if k[0] == "agent" and k[1] == b.agent.hex()]:
                del self.buckets[key]
            if out is not None and before:
                out.alerts.append({"ts_ms": now_ms, "type": "lifted", "scope": "agent", "scope_id": b.agent.hex(),
                                   "metric": "*", "detail": json.dumps({"reason": b.reason, "by": ev.signer.hex()})})
        elif ev.kind == "gov.propose":
            self.governance.propose(Proposal(ev.id, ev.signer, ev.ts, b.changes, b.activate_at, b.expires_at))
        elif ev.kind == "gov.vote":
            self.governance.vote(Vote(ev.id, b.proposal, ev.signer, ev.ts, b.approve))
            if out is not None:
                for adoption in self.governance.adopted():
                    if adoption.proposal not in self.announced:
                        self.announced.add(adoption.proposal)
                        out.node_records.append(("governance.policy.updated",
                                                 {"proposal": adoption.proposal, "effective": adoption.effective_ms}))
        elif ev.kind in RUN_KINDS and replay:
            self._replay_run(ev)

    def _replay_run(self, ev: Event) -> None:
        chain = self.chain(ev.signer)
        b = ev.body
        if ev.kind == "run.reserve":
            cost = b.cost if b.cost is not None else self.estimate(b.op, b.tokens, ev.ts)
            run = Run(b.run, ev.signer, chain, cost, 0, 0, ev.ts + b.timeout)
            self.runs[b.run] = run
            for scope in chain:
                self.holds[scope] = self.holds.get(scope, 0) + run.hold
            return
        run = self.runs.get(b.run)
        if run is None or not run.open:
            return
        old = run.hold
        if ev.kind in ("run.charge", "run.post"):
            run.spent += b.cost
            run.tokens += b.tokens
        if ev.kind in ("run.post", "run.void"):
            run.open = False
        for scope in run.chain:
            self.holds[scope] = self.holds.get(scope, 0) + run.hold - old

    # -- reads ---------------------------------------------------------------------------------------

    def budget_views(self, conn: Connection, scopes: list[tuple[str, str]], now_ms: int) -> list[dict[str, Any]]:
        """The budgets of these scopes in their windows holding now_ms, as balance shows them."""
        budgets = []
        for rule in self.rules(conn, scopes, now_ms):
            start, end = window_bounds(rule.window, now_ms)
            consumed = self.consumed(conn, rule.key + (start,))
            held = self.held((rule.scope, rule.scope_id), rule.metric)
            view = self._budget_view(rule, consumed, held, end, [])
            view["window_start"] = start
            budgets.append(view)
        return budgets

    def resolve(self, text: str) -> bytes | None:
        """The agent or user key of a readable name or a 64-hex key; None if neither."""
        if len(text) == 64:
            try:
                return bytes.fromhex(text)
            except ValueError:
                return None
        return self.names.get(text)

    def _name_field(self, scope: str, scope_id: str) -> dict[str, str]:
        """{"name": ...} for an agent or user scope with a readable name, else {}."""
        name = self.key_names.get(bytes.fromhex(scope_id)) if scope in ("agent", "user") and self.key_names else None
        return {"name": name} if name else {}

    def owner_listing(self, conn: Connection, scope: str | None, scope_id: str | None, now_ms: int) -> dict[str, Any]:
        """Owner budgets (in force and scheduled) with their current window's use: GET /v1/budgets."""
        listing = self.owner_budgets.listing(scope, scope_id, now_ms)
        for item in listing:
            current = item["in_force"]
            if current is None:
                continue
            start, end = window_bounds(item["window"], now_ms)
            consumed = self.consumed(conn, (item["scope"], item["id"], item["metric"], item["window"], start))
            held = self.held((item["scope"], item["id"]), item["metric"])
            item.update(window_start=start, window_end=end, consumed=consumed, held=held,
                        remaining=max(0, current["limit"] - consumed - held))
        return {"now": now_ms, "budgets": listing}

    def balance(self, conn: Connection, agent: bytes, now_ms: int) -> dict[str, Any]:
        """Every budget of the agent and its scopes, as of now_ms."""
        chain = self.chain(agent)
        budgets = self.budget_views(conn, chain, now_ms)
        reg = self.registrations.get(agent)
        suspension = self._active_suspension(agent, now_ms) if self.enforce else None
        policy = self.governance.policy_at(now_ms)
        stake = self.stakes.get(agent, 0)
        score = self.score(conn, agent, now_ms)
        return {
            "agent": agent.hex(),
            "name": self.key_names.get(agent),
            "now": now_ms,
            "registered": reg is not None,
            "scopes": [{"scope": s, "id": i, "plan": self._plan_of(s, i), **self._name_field(s, i)} for s, i in chain],
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
                for r in self.runs.values() if r.open and r.agent == agent and r.expires_ms > now_ms
            ],
            "budgets": budgets,
            "alerts": budget_store.recent_alerts(conn, chain, 20),
        }
