"""The budget book's state that is not policy: signer roles, runs and their holds, metered-call holds.

Theory of operation. A run (`run.reserve` … `run.post`/`run.void`) holds its
reserved cost less what it spent against every scope of its chain until it is
closed or expires. `step` is the one transition of a run, used alike when an
event is admitted here, replayed at start-up and merged from a peer; `Runs`
keeps the runs with the holds they add up to (per scope, and the part admitted
here, which strict mode counts against this node's rights), indexed by agent
so that expiry and `max_parallel_runs` cost what one agent has open.

`Roles` is the one table of who may sign what (PROTOCOL.md §6, ledger.policy):
`authorize` refuses a submitted record, `may_sign` filters a replayed or merged
one with the same table.

Bounds: open runs are at most `OPEN_RUNS_MAX` (a reservation past it is refused
`too_many_runs`, retry when the first expires); closed runs are kept (so a run id
is never reserved twice) up to `CLOSED_RUNS_MAX`, the oldest forgotten first.
No I/O, no clock: times are arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Iterable, Protocol

from ledger.errors import Forbidden, Invalid, OverBudget
from ledger.events import Event, is_metered
from ledger.reputation import anomaly_penalty_milli
from ledger.kinds import AUTHORITY_KINDS, ESCROW_KINDS, GRANT_KINDS, NODE_KINDS, ORACLE_KINDS, OWNER_KINDS, RUN_CLOSES, RUN_SPENDS

CounterKey = tuple[str, str, str, str, int]  # (scope, scope_id, metric, window, window start ms)
ScopeKey = tuple[str, str]  # (scope, scope_id)
Chain = list[ScopeKey]

OPEN_RUNS_MAX = 100_000
CLOSED_RUNS_MAX = 100_000
RUN_TIMEOUT_MS_MAX = 24 * 3_600_000


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
class Suspension:
    start_ms: int
    until_ms: int | None  # None: until lifted
    reason: str
    metric: str


@dataclass
class Run:
    run: bytes
    agent: bytes
    chain: Chain
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
class Admitted:
    """What an admitted event adds to its transaction and its receipt."""

    budgets: list[dict[str, Any]] = field(default_factory=list)
    run: dict[str, Any] | None = None
    deltas: dict[CounterKey, int] = field(default_factory=dict)
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


# -- signer roles -------------------------------------------------------------------------


@dataclass
class Roles:
    """Who may sign what here: the one table `authorize` and `may_sign` read."""

    node_key: bytes
    authorities: frozenset[bytes]
    oracles: frozenset[bytes]
    meters: frozenset[bytes]  # may sign metered events naming another agent (PROTOCOL.md §6)
    team_admins: frozenset[tuple[str, bytes]]  # (team, key): may sign owner budgets of that team
    nodes: set[bytes] = field(default_factory=set)  # admitted nodes (node.admit), whose origin logs are merged

    def may_sign(self, ev: Event) -> bool:
        """Whether ev's signer may sign a record of its kind here (metering and run kinds: anyone).

        A node's own records (NODE_KINDS) are accepted from any admitted node, escrow transfers
        are checked by the escrow book."""
        kind = ev.kind
        if kind in AUTHORITY_KINDS or kind in GRANT_KINDS:
            return ev.signer in self.authorities
        if kind in ORACLE_KINDS:
            return ev.signer in self.oracles
        if kind in NODE_KINDS:
            return ev.signer in self.nodes
        if kind in OWNER_KINDS:
            b = ev.body
            return ev.signer in self.authorities or (b.scope == "team" and (b.id, ev.signer) in self.team_admins)
        return True

    def authorize(self, ev: Event) -> None:
        """A record submitted here: policy records only from their signers, node records and escrow
        transfers only from this node, metered events only from meters. Raises Forbidden."""
        kind = ev.kind
        if is_metered(ev) and ev.signer not in self.meters:
            raise Forbidden("not_meter", "only this node or a configured meter may sign an event naming the agent charged")
        if kind in NODE_KINDS or kind in ESCROW_KINDS:
            if ev.signer != self.node_key:
                what = "written by the node that gives" if kind == "escrow.transfer" else "written by nodes"
                raise Forbidden("not_authority", f"{kind} records are {what}, not submitted")
            return
        if self.may_sign(ev):
            return
        if kind in ORACLE_KINDS:
            raise Forbidden("not_authority", f"{kind} must be signed by an oracle of this node")
        if kind in OWNER_KINDS:
            raise Forbidden("not_authority", f"{kind} must be signed by a governance authority of this node,"
                            " or for a team's own budget by one of its team_admins")
        raise Forbidden("not_authority", f"{kind} must be signed by a governance authority of this node")

    def role(self, issuer: bytes, registered: bool) -> str:
        """A rating issuer's role for reputation (ledger.reputation): system, peer (a registered agent) or user."""
        if issuer == self.node_key or issuer in self.authorities:
            return "system"
        return "peer" if registered else "user"


# -- runs ---------------------------------------------------------------------------------


def step(run: Run, kind: str, cost: int = 0, tokens: int = 0) -> Run:
    """The run after one of its records: charge and post add the spend, post and void close it."""
    if kind in RUN_SPENDS:
        run = replace(run, spent=run.spent + cost, tokens=run.tokens + tokens)
    if kind in RUN_CLOSES:
        run = replace(run, open=False)
    return run


def run_state(run: Run, kind: str) -> str:
    """The state a receipt reports: pending, posted or voided."""
    return "pending" if run.open else ("posted" if kind == "run.post" else "voided")


class Runs:
    """Open and recently closed runs, and what the open ones hold per scope (bounded, see the module)."""

    def __init__(self, open_max: int = OPEN_RUNS_MAX, closed_max: int = CLOSED_RUNS_MAX) -> None:
        self.open_max, self.closed_max = open_max, closed_max
        self.open: dict[bytes, Run] = {}
        self.closed: dict[bytes, Run] = {}  # insertion order: the oldest closed first
        self.by_agent: dict[bytes, dict[bytes, None]] = {}  # open run ids per agent, in reservation order
        self.holds: dict[ScopeKey, int] = {}  # act.cost held by open runs
        self.local_holds: dict[ScopeKey, int] = {}  # the part of it admitted here

    def get(self, run_id: bytes) -> Run | None:
        return self.open.get(run_id) or self.closed.get(run_id)

    def __contains__(self, run_id: bytes) -> bool:
        return run_id in self.open or run_id in self.closed

    def of_agent(self, agent: bytes) -> list[Run]:
        return [self.open[r] for r in self.by_agent.get(agent, ())]

    def _move(self, run: Run, sign: int) -> None:
        if not run.hold:
            return
        for scope in run.chain:
            self.holds[scope] = self.holds.get(scope, 0) + sign * run.hold
            if run.local:
                self.local_holds[scope] = self.local_holds.get(scope, 0) + sign * run.hold

    def put(self, run: Run) -> None:
        """Store a run's new state (after `step`, or a new reservation) and move the holds it changes."""
        old = self.open.get(run.run)
        if old is not None:
            self._move(old, -1)
        if run.open:
            self.open[run.run] = run  # a known run keeps its place: balance lists runs in reservation order
            self.by_agent.setdefault(run.agent, {})[run.run] = None
            self._move(run, +1)
            return
        if old is not None:
            del self.open[run.run]
            ids = self.by_agent[old.agent]
            ids.pop(run.run, None)
            if not ids:
                del self.by_agent[old.agent]
        self.closed[run.run] = run
        while len(self.closed) > self.closed_max:
            del self.closed[next(iter(self.closed))]

    def expire(self, agent: bytes, now_ms: int) -> None:
        """Close the agent's runs whose reservation expired by now_ms (their holds are released)."""
        if agent not in self.by_agent:
            return
        for run in [r for r in self.of_agent(agent) if r.expires_ms <= now_ms]:
            self.put(replace(run, open=False))

    def check_room(self, now_ms: int) -> None:
        """Refuse a new reservation when OPEN_RUNS_MAX runs are open (OverBudget too_many_runs)."""
        if len(self.open) >= self.open_max:
            first = min(r.expires_ms for r in self.open.values())
            raise OverBudget("too_many_runs", f"{len(self.open)} runs are open on this node, the most it keeps",
                             details={"retry_after_ms": max(1, first - now_ms)})

    def local_held(self, scope: ScopeKey, excluding: Run | None = None) -> int:
        """act.cost held by open runs admitted here on scope, without `excluding`'s current hold."""
        total = self.local_holds.get(scope, 0)
        if excluding is not None and excluding.local and excluding.run in self.open and scope in excluding.chain:
            total -= excluding.hold
        return total


def check_run_limits(reg: Registration, body: Any, cost: int, open_runs: list[Run], now_ms: int) -> None:
    """A reservation against the agent's registered run limits; raises Invalid or OverBudget."""
    if reg.allowed_tools is not None and not set(body.tools or ()) <= set(reg.allowed_tools):
        denied = sorted(set(body.tools or ()) - set(reg.allowed_tools))
        raise Invalid("tool_not_allowed", f"tools not allowed for this agent: {', '.join(denied)}")
    if reg.max_tokens_per_run is not None and body.tokens > reg.max_tokens_per_run:
        raise Invalid("run_limit_exceeded", f"{body.tokens} tokens is over max_tokens_per_run {reg.max_tokens_per_run}")
    if reg.max_cost_per_run is not None and cost > reg.max_cost_per_run:
        raise Invalid("run_limit_exceeded", f"estimated cost {cost} is over max_cost_per_run {reg.max_cost_per_run}")
    if reg.max_parallel_runs is not None and len(open_runs) >= reg.max_parallel_runs:
        retry = min(r.expires_ms for r in open_runs) - now_ms if open_runs else 1000
        raise OverBudget("too_many_runs", f"{len(open_runs)} runs open, max_parallel_runs is {reg.max_parallel_runs}",
                         details={"retry_after_ms": max(1, retry)})


# -- metered calls ------------------------------------------------------------------------


class OpenCallLike(Protocol):
    """What the book reads of an open metered call (node/store/meter.py OpenCall)."""

    call: bytes
    agent: bytes
    kind: str
    cost: int

    @property
    def tokens(self) -> int: ...


def call_amounts(call: OpenCallLike) -> dict[str, int]:
    """What an open call holds against each metric until it is settled: its worst case."""
    if call.kind == "llm":
        return {"act.cost": call.cost, "act.llm_tokens": call.tokens, "events": 1}
    return {"act.cost": call.cost, "act.runs": 1, "events": 3}  # a task: one run; its act, cpt and dat


class CallHolds:
    """Open metered calls (mirrors meter_calls in SQLite, bounded by the meter's concurrency) and their holds."""

    def __init__(self) -> None:
        self.calls: dict[bytes, tuple[Any, Chain]] = {}  # call id -> (OpenCall, chain)
        self.holds: dict[tuple[str, str, str], int] = {}  # (scope, scope_id, metric) -> held

    def hold(self, call: OpenCallLike, chain: Chain) -> None:
        self.calls[call.call] = (call, chain)
        for scope in chain:
            for metric, amount in call_amounts(call).items():
                key = scope + (metric,)
                self.holds[key] = self.holds.get(key, 0) + amount

    def settle(self, call_id: bytes) -> bool:
        """Release a call's holds; False if it was not open."""
        entry = self.calls.pop(call_id, None)
        if entry is None:
            return False
        call, chain = entry
        for scope in chain:
            for metric, amount in call_amounts(call).items():
                key = scope + (metric,)
                left = self.holds.get(key, 0) - amount
                if left > 0:
                    self.holds[key] = left
                else:
                    self.holds.pop(key, None)
        return True

    def settle_all(self, call_ids: Iterable[bytes]) -> None:
        for call_id in call_ids:
            self.settle(call_id)
