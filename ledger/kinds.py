"""The kind registry: every event kind this node knows, said once.

One `Kind` per event kind says what it is (its body class: schema and parser), who signs
it (`role`), whether and how it is metered (`charges`: metric -> amount of its body, the
kind's cost function), the usage group reports and docs show it under, whether a meter may
sign it about an agent, whether anomaly detection watches it, its default budget (usage
kinds), and the section of docs/protocol.md that documents it.

Every other list of kinds is derived from `REGISTRY` here: the parser's table (`KINDS`),
the usage kinds governance budgets (`METERING_KINDS`), the metric table of `ledger.budget`
(`METRICS`), the report groups, the signer roles node admission checks, the costed and
observed kinds. `Registry` checks its entries when built and raises ValueError on a kind
that is incomplete (a usage kind with no group, budget or charges; an unknown metric or
role; a duplicate), so a new kind is either wired everywhere or refused at import.
tests/unit/test_kinds.py builds a registry with a kind of its own to show it, and
tests/test_architecture.py fails on any list of kind names written outside this module.

Registration is static: the table is built once, at import, from the body classes it names;
no module registers a kind by being imported.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

from ledger import escrow, policy, readgrants, scoped
from ledger.bodies import ActBody, Body, CptBody, DatBody, TrtBody
from ledger.errors import check

# Who signs a kind (docs/protocol.md §3.2 has the table; node admission enforces it).
ROLES: Mapping[str, str] = MappingProxyType({
    "usage": "usage: the agent metered, or a meter naming the agent charged",
    "run": "run accounting: the agent itself",
    "authority": "a governance authority",
    "oracle": "an oracle",
    "node": "a node, for its own records",
    "grant": "a governance authority (read grants)",
    "owner": "a governance authority or the scope's owner (owner budgets)",
    "escrow": "a strict member node, for its own records",
})
GROUPS = ("ACT", "DAT", "CPT", "TRT")  # usage groups of reports and docs, in display order
DOC_SECTIONS = {"3.1": "### 3.1 ", "3.2": "### 3.2 "}  # docs/protocol.md headings
# Every metric an event can charge, with its unit; metric order is this order everywhere.
METRIC_UNITS: Mapping[str, str] = MappingProxyType({
    "act.cost": "milli-T (cost weight × 1000)",
    "act.llm_tokens": "tokens",
    "act.runs": "runs",
    "act.messages": "messages",
    "dat.bytes": "bytes read + written",
    "dat.written": "bytes written",
    "cpt.units": "CPU + GPU time slices",
    "trt.count": "trust ratings issued",
    "events": "events",
})
# The fields of a default budget (ledger.governance.Budget).
BUDGET_FIELDS = ("metric", "limit", "window", "soft_pct", "hard_pct", "throttle", "suspend", "reserve_pct")

Charge = Callable[[Any], int]  # amount(body) -> int; Any: each kind's own body class


def _one(_body: Any) -> int:
    return 1


@dataclass(frozen=True)
class Kind:
    """One event kind and everything the node does with it."""

    body: type[Body]
    role: str  # a key of ROLES
    docs: str  # the docs/protocol.md section that documents it (a key of DOC_SECTIONS)
    group: str | None = None  # the usage group reports and docs show it under (GROUPS)
    charges: Mapping[str, Charge] = field(default_factory=dict)  # metric -> amount(body)
    meterable: bool = False  # a meter may sign it about an agent (the body's `agent` field)
    observed: bool = False  # anomaly detection watches it
    budget: Mapping[str, Any] | None = None  # usage kinds: their default budget (BUDGET_FIELDS)

    @property
    def name(self) -> str:
        return self.body.KIND


def _shape_problems(k: Kind) -> list[str]:
    """What is wrong in the names an entry gives: body, role, docs section, group, metrics."""
    out = []
    if not isinstance(k.body, type) or not issubclass(k.body, Body) or not k.body.KIND:
        out.append("body must be a Body subclass with a KIND")
    if k.role not in ROLES:
        out.append(f"role {k.role!r} is not one of {', '.join(ROLES)}")
    if k.docs not in DOC_SECTIONS:
        out.append(f"docs section {k.docs!r} is not one of {', '.join(DOC_SECTIONS)}")
    if k.group is not None and k.group not in GROUPS:
        out.append(f"group {k.group!r} is not one of {', '.join(GROUPS)}")
    return out + [f"charges unknown metric {m!r}" for m in k.charges if m not in METRIC_UNITS]


def _metering_problems(k: Kind) -> list[str]:
    """What is missing in how an entry is metered: group, charges, default budget, agent field."""
    out = []
    if k.role == "usage" and (k.group is None or not k.charges or k.budget is None):
        out.append("a usage kind needs a group, charges and a default budget")
    if k.role != "usage" and k.budget is not None:
        out.append("only usage kinds have a default budget")
    if k.budget is not None:
        if tuple(k.budget) != BUDGET_FIELDS:
            out.append(f"default budget must give exactly {', '.join(BUDGET_FIELDS)}")
        elif k.budget["metric"] not in k.charges:
            out.append(f"default budget counts {k.budget['metric']!r}, which the kind does not charge")
    if (k.charges or k.group) and "events" not in k.charges:
        out.append("a kind that charges or is grouped counts in the `events` metric")
    if k.meterable and "agent" not in {f.name for f in fields(k.body)}:
        out.append("a meterable kind's body needs an `agent` field")
    if k.observed and not k.charges:
        out.append("an observed kind must charge something")
    return out


def _problems(k: Kind) -> list[str]:
    """What is missing or wrong in one entry; [] when it is complete."""
    return _shape_problems(k) + _metering_problems(k)


class Registry:
    """A checked, read-only table of kinds and every view of it the node uses."""

    def __init__(self, kinds: Iterable[Kind]):
        self.kinds: tuple[Kind, ...] = tuple(kinds)
        bodies: dict[str, type[Body]] = {}
        for k in self.kinds:
            problems = _problems(k)
            if problems:
                raise ValueError(f"kind {getattr(k.body, 'KIND', k.body)!r}: {'; '.join(problems)}")
            if k.name in bodies:
                raise ValueError(f"kind {k.name!r} is registered twice")
            bodies[k.name] = k.body
        self.bodies: Mapping[str, type[Body]] = MappingProxyType(bodies)
        self.by_name: Mapping[str, Kind] = MappingProxyType({k.name: k for k in self.kinds})
        self.usage: tuple[str, ...] = self._names(lambda k: k.role == "usage")
        self.meterable: frozenset[str] = frozenset(self._names(lambda k: k.meterable))
        self.costed: tuple[str, ...] = self._names(lambda k: "act.cost" in k.charges)
        self.observed: tuple[str, ...] = self._names(lambda k: k.observed)
        self.groups: Mapping[str, str] = MappingProxyType({k.name: k.group for k in self.kinds if k.group})
        self.metrics: Mapping[str, Mapping[str, Charge]] = MappingProxyType({
            m: MappingProxyType({k.name: k.charges[m] for k in self.kinds if m in k.charges}) for m in METRIC_UNITS
        })
        self.default_budgets: Mapping[str, Mapping[str, Any]] = MappingProxyType(
            {k.name: k.budget for k in self.kinds if k.budget is not None})

    def _names(self, keep: Callable[[Kind], bool]) -> tuple[str, ...]:
        return tuple(k.name for k in self.kinds if keep(k))

    def role(self, role: str) -> frozenset[str]:
        """The kinds signed by this role (ROLES)."""
        check(role in ROLES, f"unknown signer role {role!r}")
        return frozenset(self._names(lambda k: k.role == role))

    def charges(self, kind: str, body: Body) -> dict[str, int]:
        """The non-zero amount an event of this kind and body adds to each metric, in metric order."""
        out = {}
        for metric, by_kind in self.metrics.items():
            fn = by_kind.get(kind)
            if fn is not None:
                amount = fn(body)
                if amount:
                    out[metric] = amount
        return out


def _budget(metric: str, limit: int, window: str, soft_pct: int, hard_pct: int, throttle: bool, suspend: bool,
            reserve_pct: int) -> Mapping[str, Any]:
    return MappingProxyType(dict(zip(BUDGET_FIELDS, (metric, limit, window, soft_pct, hard_pct, throttle, suspend,
                                                     reserve_pct))))


_RUN_SPEND: Mapping[str, Charge] = {"act.cost": lambda b: b.cost, "act.llm_tokens": lambda b: b.tokens, "events": _one}

REGISTRY = Registry((
    # §3.1 the four usage kinds
    Kind(ActBody, "usage", "3.1", group="ACT", meterable=True, observed=True, charges={
        "act.cost": lambda b: b.cost,
        "act.llm_tokens": lambda b: (b.units or 0) if b.op == "llm.call" else 0,
        "act.runs": lambda b: 1 if b.op == "agent.run" else 0,
        "act.messages": lambda b: 1 if b.op.startswith("message.") else 0,
        "events": _one,
    }, budget=_budget("act.cost", 5_000_000, "day", 80, 100, True, True, 10)),  # 5,000 T a day, in milli-T
    Kind(DatBody, "usage", "3.1", group="DAT", meterable=True, observed=True, charges={
        "dat.bytes": lambda b: b.read + b.written, "dat.written": lambda b: b.written, "events": _one,
    }, budget=_budget("dat.bytes", 2_000_000, "day", 85, 100, True, False, 5)),
    Kind(CptBody, "usage", "3.1", group="CPT", meterable=True, observed=True, charges={
        "cpt.units": lambda b: b.cpu + b.gpu, "events": _one,
    }, budget=_budget("cpt.units", 500, "hour", 75, 90, True, True, 15)),
    Kind(TrtBody, "usage", "3.1", group="TRT", charges={"trt.count": _one, "events": _one},
         budget=_budget("trt.count", 1_000, "week", 90, 100, False, False, 0)),
    # §3.2 policy, governance and node records
    Kind(policy.AgentRegisterBody, "authority", "3.2"),
    Kind(policy.PlanAssignBody, "authority", "3.2"),
    Kind(policy.StakeSetBody, "oracle", "3.2"),
    Kind(policy.AgentSuspendBody, "authority", "3.2"),
    Kind(policy.AgentLiftBody, "authority", "3.2"),
    Kind(policy.AgentSuspendedBody, "node", "3.2"),
    Kind(policy.GovProposeBody, "authority", "3.2"),
    Kind(policy.GovVoteBody, "authority", "3.2"),
    Kind(policy.PolicyUpdatedBody, "node", "3.2"),
    Kind(policy.NodeAdmitBody, "authority", "3.2"),
    # §3.2 runs: ACT accounting signed by the agent
    Kind(policy.RunReserveBody, "run", "3.2", group="ACT", charges={"act.runs": _one, "events": _one}),
    Kind(policy.RunChargeBody, "run", "3.2", group="ACT", observed=True, charges=_RUN_SPEND),
    Kind(policy.RunPostBody, "run", "3.2", group="ACT", observed=True, charges=_RUN_SPEND),
    Kind(policy.RunVoidBody, "run", "3.2"),
    # §3.2 strict mode, owner budgets, read grants
    Kind(escrow.EscrowTransferBody, "escrow", "3.2"),
    Kind(scoped.BudgetSetBody, "owner", "3.2"),
    Kind(scoped.BudgetRmBody, "owner", "3.2"),
    Kind(readgrants.ReadGrantBody, "grant", "3.2"),
    Kind(readgrants.ReadRevokeBody, "grant", "3.2"),
))

KINDS: Mapping[str, type[Body]] = REGISTRY.bodies  # kind -> body class: what the parser accepts
METERING_KINDS = REGISTRY.usage  # the usage kinds, each with a default budget (ledger.governance)
METERED_KINDS = REGISTRY.meterable  # kinds whose body may name the agent charged (PROTOCOL.md §6)
COSTED_KINDS = REGISTRY.costed  # kinds that cost milli-T (`act.cost`)
OBSERVED_KINDS = REGISTRY.observed  # kinds anomaly detection watches
KIND_GROUPS = REGISTRY.groups  # kind -> usage group of reports
METRICS = REGISTRY.metrics  # metric -> {kind: amount(body)} (ledger.budget)
DEFAULT_BUDGETS = REGISTRY.default_budgets  # usage kind -> its default budget's fields
AUTHORITY_KINDS = REGISTRY.role("authority")
ORACLE_KINDS = REGISTRY.role("oracle")
NODE_KINDS = REGISTRY.role("node")
RUN_KINDS = REGISTRY.role("run")
GRANT_KINDS = REGISTRY.role("grant")
OWNER_KINDS = REGISTRY.role("owner")
ESCROW_KINDS = REGISTRY.role("escrow")
POLICY_KINDS = AUTHORITY_KINDS | ORACLE_KINDS | NODE_KINDS

# Run records: which add to the run's spend, and which close it (ledger.book.step).
RUN_SPENDS = frozenset({"run.charge", "run.post"})
RUN_CLOSES = frozenset({"run.post", "run.void"})
check(RUN_SPENDS | RUN_CLOSES <= RUN_KINDS, "run records are run kinds")
