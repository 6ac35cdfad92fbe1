"""The budget book's policy state: the fold of registrations, plans, stakes, suspensions, owner
budgets, read grants and governance records (ledger.policy kinds), with no I/O and no clock.

Theory of operation. Every policy record is an event of the log, so this state
is a fold: `apply` takes one record (admitted here, replayed at start-up, or
merged from a peer) and moves the state, or raises the LedgerError that
refuses it before anything moves. One handler per kind (`_HANDLERS`).
`version` grows with every change that may change a scope's limits (a
registration, a plan, a stake, a governance record, an owner budget), so the
node's cache of effective limits (node/budgets.py) is invalidated only by them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable

from ledger.book import Admitted, Chain, Registration, Suspension, trust_penalty
from ledger.budget import Bucket, Rule
from ledger.errors import Conflict, OverBudget
from ledger.events import Event
from ledger.governance import Governance, Proposal, Vote
from ledger.plans import plan_named
from ledger import policy
from ledger.kinds import GRANT_KINDS, OWNER_KINDS
from ledger.readgrants import Grants
from ledger.scoped import OwnerBudgets, from_record

MANUAL_SUSPENSION_RETRY_MS = 3_600_000
BUCKETS_MAX = 100_000  # throttle buckets kept; past it the oldest is dropped (that scope starts a full bucket)


def alert(type_: str, scope: str, scope_id: str, metric: str, now_ms: int, detail: dict[str, Any]) -> dict[str, Any]:
    """An alert row (node/store/budgets.py insert_alerts)."""
    return {"ts_ms": now_ms, "type": type_, "scope": scope, "scope_id": scope_id, "metric": metric,
            "detail": json.dumps(detail, sort_keys=True)}


@dataclass
class PolicyState:
    """Who is registered where, under which plan and stake, suspended or not, and the policy in force."""

    governance: Governance
    unregistered: str
    default_plan: str
    registrations: dict[bytes, Registration] = field(default_factory=dict)
    users: set[bytes] = field(default_factory=set)
    names: dict[str, bytes] = field(default_factory=dict)  # readable name -> agent or user key
    key_names: dict[bytes, str] = field(default_factory=dict)
    plans: dict[tuple[str, str], str] = field(default_factory=dict)
    stakes: dict[bytes, int] = field(default_factory=dict)
    suspensions: dict[bytes, list[Suspension]] = field(default_factory=dict)
    owner_budgets: OwnerBudgets = field(default_factory=OwnerBudgets)
    grants: Grants = field(default_factory=Grants)
    buckets: dict[tuple[str, str, str, str], Bucket] = field(default_factory=dict)
    announced: set[bytes] = field(default_factory=set)  # adoptions already recorded by this node
    nodes: set[bytes] = field(default_factory=set)  # admitted nodes (shared with Roles)
    version: int = 0

    # -- scopes ---------------------------------------------------------------------------

    def chain(self, signer: bytes) -> Chain:
        """The scopes an event by signer charges: agent, then its user, team and platform."""
        reg = self.registrations.get(signer)
        if reg is None:
            return [("agent", signer.hex())]
        return [("agent", signer.hex()), ("user", reg.user), ("team", reg.team), ("platform", reg.platform)]

    def plan_of(self, scope: str, scope_id: str) -> str | None:
        explicit = self.plans.get((scope, scope_id))
        if explicit:
            return explicit
        if scope == "agent":
            reg = self.registrations.get(bytes.fromhex(scope_id))
            return reg.plan if reg else self.default_plan
        return None

    def set_bucket(self, key: tuple[str, str, str, str], bucket: Bucket) -> None:
        if key not in self.buckets and len(self.buckets) >= BUCKETS_MAX:
            del self.buckets[next(iter(self.buckets))]
        self.buckets[key] = bucket

    # -- suspensions ----------------------------------------------------------------------

    def active_suspension(self, agent: bytes, now_ms: int) -> Suspension | None:
        for s in self.suspensions.get(agent, ()):
            if s.until_ms is None or s.until_ms > now_ms:
                return s
        return None

    def suspended_agents(self, now_ms: int) -> set[bytes]:
        return {a for a in self.suspensions if self.active_suspension(a, now_ms) is not None}

    def check_suspended(self, agent: bytes, now_ms: int) -> None:
        """Raises OverBudget("suspended") while the agent is suspended."""
        s = self.active_suspension(agent, now_ms)
        if s is not None:
            retry = MANUAL_SUSPENSION_RETRY_MS if s.until_ms is None else s.until_ms - now_ms
            until = "until an authority lifts it" if s.until_ms is None else f"until {s.until_ms} ms"
            raise OverBudget("suspended", f"agent is suspended {until}: {s.reason}", details={"retry_after_ms": retry})

    def auto_suspend(self, agent: bytes, rule: Rule, until_ms: int, now_ms: int, out: Admitted) -> None:
        """The node suspends an agent whose real spending passed a hard limit with `suspend` set."""
        current = self.active_suspension(agent, now_ms)
        if current is not None and (current.until_ms is None or current.until_ms >= until_ms):
            return
        reason = f"hard limit of {rule.metric} per {rule.window} reached"
        self.suspensions.setdefault(agent, []).append(Suspension(now_ms, until_ms, reason, rule.metric))
        out.node_records.append(("agent.suspended", {"agent": agent, "metric": rule.metric, "until": until_ms, "reason": reason}))
        out.node_records.append(trust_penalty(agent))
        out.alerts.append(alert("suspended", rule.scope, rule.scope_id, rule.metric, now_ms, {"until": until_ms, "reason": reason}))

    # -- the fold -------------------------------------------------------------------------

    def apply(self, ev: Event, now_ms: int, out: Admitted | None = None, replay: bool = False) -> list[str]:
        """Fold one policy, governance or node record; raises the LedgerError refusing it (nothing moved).

        out (admission only) receives the alerts and node records it causes. Returns warnings
        worth logging (a replicated registration that lost the race for a name)."""
        handler = _HANDLERS.get(ev.kind)
        if handler is None:
            return []
        return handler(self, ev, now_ms, out, replay) or []

    def _register(self, ev: Event, _now: int, _out: Admitted | None, replay: bool) -> list[str]:
        b = ev.body
        plan_named(b.plan)
        named = [(n, k) for n, k in ((b.name, b.agent), (b.user_name, b.user)) if n is not None]
        if b.name is not None and b.name == b.user_name and b.agent != b.user:
            raise Conflict("name_taken", f"name {b.name!r} given to both the agent and its user")
        warnings = []
        for n, k in list(named):
            if self.names.get(n, k) != k:
                if not replay:
                    raise Conflict("name_taken", f"name {n!r} is already the name of {self.names[n].hex()}")
                # a replicated record that lost the race for a name keeps its key only
                warnings.append(f"name {n} of {k.hex()} is taken by {self.names[n].hex()}: not applied")
                named.remove((n, k))
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
        return warnings

    def _plan(self, ev: Event, *_: Any) -> None:
        plan_named(ev.body.plan)
        self.plans[(ev.body.scope, ev.body.id)] = ev.body.plan
        self.version += 1

    def _stake(self, ev: Event, *_: Any) -> None:
        self.stakes[ev.body.agent] = ev.body.amount
        self.version += 1

    def _admit_node(self, ev: Event, *_: Any) -> None:
        self.nodes.add(ev.body.node)

    def _grant(self, ev: Event, *_: Any) -> None:
        self.grants.apply(ev.kind, ev.body, ev.ts)  # raises before anything moves

    def _owner(self, ev: Event, _now: int, _out: Admitted | None, replay: bool) -> None:
        record = from_record(ev.kind, ev.body, ev.ts, ev.id, ev.signer)  # raises before anything moves
        if not replay:
            self.owner_budgets.check(record)
        self.owner_budgets.add(record)
        self.version += 1

    def _suspend(self, ev: Event, now_ms: int, out: Admitted | None, _replay: bool) -> None:
        b = ev.body
        self.suspensions.setdefault(b.agent, []).append(Suspension(ev.ts, None, b.reason, "*"))
        if out is not None:
            out.alerts.append(_by_alert("suspended", b.agent, now_ms, b.reason, ev.signer))

    def _suspended(self, ev: Event, *_: Any) -> None:
        b = ev.body
        self.suspensions.setdefault(b.agent, []).append(Suspension(ev.ts, b.until, b.reason, b.metric))

    def _lift(self, ev: Event, now_ms: int, out: Admitted | None, _replay: bool) -> None:
        b = ev.body
        before = self.suspensions.get(b.agent, [])
        self.suspensions[b.agent] = [s for s in before if s.start_ms > ev.ts]
        agent_hex = b.agent.hex()
        for key in [k for k in self.buckets if k[0] == "agent" and k[1] == agent_hex]:
            del self.buckets[key]
        if out is not None and before:
            out.alerts.append(_by_alert("lifted", b.agent, now_ms, b.reason, ev.signer))

    def _propose(self, ev: Event, *_: Any) -> None:
        b = ev.body
        self.governance.propose(Proposal(ev.id, ev.signer, ev.ts, b.changes, b.activate_at, b.expires_at))
        self.version += 1

    def _vote(self, ev: Event, _now: int, out: Admitted | None, _replay: bool) -> None:
        self.governance.vote(Vote(ev.id, ev.body.proposal, ev.signer, ev.ts, ev.body.approve))
        self.version += 1
        if out is None:
            return
        for adoption in self.governance.adopted():
            if adoption.proposal not in self.announced:
                self.announced.add(adoption.proposal)
                out.node_records.append(("governance.policy.updated",
                                         {"proposal": adoption.proposal, "effective": adoption.effective_ms}))


def _by_alert(type_: str, agent: bytes, now_ms: int, reason: str, by: bytes) -> dict[str, Any]:
    return {"ts_ms": now_ms, "type": type_, "scope": "agent", "scope_id": agent.hex(), "metric": "*",
            "detail": json.dumps({"reason": reason, "by": by.hex()})}


_Handler = Callable[[PolicyState, Event, int, "Admitted | None", bool], "list[str] | None"]
_HANDLERS: dict[str, _Handler] = {  # keyed by each body's KIND: the kind names live in ledger.kinds
    policy.AgentRegisterBody.KIND: PolicyState._register,
    policy.PlanAssignBody.KIND: PolicyState._plan,
    policy.StakeSetBody.KIND: PolicyState._stake,
    policy.NodeAdmitBody.KIND: PolicyState._admit_node,
    **{kind: PolicyState._grant for kind in GRANT_KINDS},
    **{kind: PolicyState._owner for kind in OWNER_KINDS},
    policy.AgentSuspendBody.KIND: PolicyState._suspend,
    policy.AgentSuspendedBody.KIND: PolicyState._suspended,
    policy.AgentLiftBody.KIND: PolicyState._lift,
    policy.GovProposeBody.KIND: PolicyState._propose,
    policy.GovVoteBody.KIND: PolicyState._vote,
}
