"""Policy, governance, run and node-record event kinds (PROTOCOL.md §3: implementation-defined kinds).

They are entries of the kind registry (`ledger.kinds`) and are logged like any
event, so every node folds the same records into the same policy state.

Who may sign what (checked at admission, `ledger.budget.authorize`):

| kind | signer |
|---|---|
| `agent.register`, `plan.assign`, `agent.suspend`, `agent.lift`, `gov.propose`, `gov.vote`, `node.admit` | a governance authority (config `authorities`) |
| `stake.set` | an oracle (config `oracles`) |
| `run.reserve`, `run.charge`, `run.post`, `run.void` | the agent itself |
| `agent.suspended`, `governance.policy.updated` | a node (its own records) |
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, ClassVar

from ledger.errors import Invalid
from ledger.bodies import Body, _bytes32, _op, _time_ms, _uint, spec

_ID_RE = re.compile(r"[a-z0-9._-]{1,64}")
SCOPES = ("agent", "user", "team", "platform")
REASON_CHARS_MAX = 200
TOOLS_MAX = 64


def _text_id(name: str, value: Any) -> str:
    if type(value) is not str or not _ID_RE.fullmatch(value):
        raise Invalid("invalid_body", f"{name} must be 1-64 characters of a-z0-9._-")
    return value


def _scope_id(name: str, value: Any) -> str:
    if type(value) is not str or not (_ID_RE.fullmatch(value) or re.fullmatch(r"[0-9a-f]{64}", value)):
        raise Invalid("invalid_body", f"{name} must be a name (a-z0-9._-) or 64 lowercase hex digits")
    return value


def _name(name: str, value: Any) -> str:
    """A readable name of an agent or user: a name that cannot be mistaken for a 64-hex key."""
    if type(value) is not str or not _ID_RE.fullmatch(value) or re.fullmatch(r"[0-9a-f]{64}", value):
        raise Invalid("invalid_body", f"{name} must be 1-64 characters of a-z0-9._-, not a 64-hex key")
    return value


def _reason(name: str, value: Any) -> str:
    if type(value) is not str or len(value) > REASON_CHARS_MAX:
        raise Invalid("invalid_body", f"{name} must be text of at most {REASON_CHARS_MAX} characters")
    return value


def _bytes16(name: str, value: Any) -> bytes:
    if type(value) is not bytes or len(value) != 16:
        raise Invalid("invalid_body", f"{name} must be 16 bytes")
    return value


def _bool(name: str, value: Any) -> bool:
    if type(value) is not bool:
        raise Invalid("invalid_body", f"{name} must be true or false")
    return value


def _score(name: str, value: Any) -> int:
    if type(value) is not int or not 0 <= value <= 1000:
        raise Invalid("invalid_body", f"{name} must be a task performance score 0..1000 (× 1000)")
    return value


def _scope(name: str, value: Any) -> str:
    if value not in SCOPES or type(value) is not str:
        raise Invalid("invalid_body", f"{name} must be one of {', '.join(SCOPES)}")
    return value


def _tools(name: str, value: Any) -> tuple[str, ...]:
    if type(value) is not list or len(value) > TOOLS_MAX:
        raise Invalid("invalid_body", f"{name} must be a list of at most {TOOLS_MAX} tool names")
    return tuple(_op(f"{name}[{i}]", v) for i, v in enumerate(value))


def _changes(name: str, value: Any) -> dict:
    if type(value) is not dict:
        raise Invalid("invalid_body", f"{name} must be a map")
    return value


class PolicyBody(Body):
    """Policy records meter nothing."""

    METRICS: ClassVar[tuple[str, ...]] = ()


@dataclass(frozen=True)
class AgentRegisterBody(PolicyBody):
    """An agent joins a user, team and platform on a plan, with its run limits."""

    KIND: ClassVar[str] = "agent.register"
    agent: bytes = spec(_bytes32)
    user: bytes = spec(_bytes32)
    team: str = spec(_text_id)
    platform: str = spec(_text_id)
    plan: str = spec(_text_id)
    max_tokens_per_run: int | None = spec(_uint, required=False)
    max_cost_per_run: int | None = spec(_uint, required=False)
    max_parallel_runs: int | None = spec(_uint, required=False)
    allowed_tools: tuple[str, ...] | None = spec(_tools, required=False)
    name: str | None = spec(_name, required=False)  # the agent's readable name (unique among agents and users)
    user_name: str | None = spec(_name, required=False)  # the user's readable name


@dataclass(frozen=True)
class PlanAssignBody(PolicyBody):
    """Put a scope (agent or user by hex key; team or platform by name) on a plan."""

    KIND: ClassVar[str] = "plan.assign"
    scope: str = spec(_scope)
    id: str = spec(_scope_id)
    plan: str = spec(_text_id)


@dataclass(frozen=True)
class StakeSetBody(PolicyBody):
    """An oracle sets an agent's stake (drives the stake multiplier)."""

    KIND: ClassVar[str] = "stake.set"
    agent: bytes = spec(_bytes32)
    amount: int = spec(_uint)


@dataclass(frozen=True)
class AgentSuspendBody(PolicyBody):
    """An authority suspends an agent until lifted."""

    KIND: ClassVar[str] = "agent.suspend"
    agent: bytes = spec(_bytes32)
    reason: str = spec(_reason)


@dataclass(frozen=True)
class AgentLiftBody(PolicyBody):
    """An authority lifts every suspension of an agent that began before this record."""

    KIND: ClassVar[str] = "agent.lift"
    agent: bytes = spec(_bytes32)
    reason: str = spec(_reason)


@dataclass(frozen=True)
class AgentSuspendedBody(PolicyBody):
    """A node's record that an agent was suspended at a hard limit, until `until` (ms)."""

    KIND: ClassVar[str] = "agent.suspended"
    agent: bytes = spec(_bytes32)
    metric: str = spec(_op)
    until: int = spec(_time_ms)
    reason: str = spec(_reason)


@dataclass(frozen=True)
class GovProposeBody(PolicyBody):
    """A proposal to change the policy (see ledger.governance for the grammar of `changes`)."""

    KIND: ClassVar[str] = "gov.propose"
    title: str = spec(_reason)
    changes: dict = spec(_changes)
    activate_at: int = spec(_time_ms)
    expires_at: int = spec(_time_ms)


@dataclass(frozen=True)
class GovVoteBody(PolicyBody):
    KIND: ClassVar[str] = "gov.vote"
    proposal: bytes = spec(_bytes32)
    approve: bool = spec(_bool)


@dataclass(frozen=True)
class PolicyUpdatedBody(PolicyBody):
    """A node's record that an adopted proposal takes effect at `effective` (ms)."""

    KIND: ClassVar[str] = "governance.policy.updated"
    proposal: bytes = spec(_bytes32)
    effective: int = spec(_time_ms)


@dataclass(frozen=True)
class NodeAdmitBody(PolicyBody):
    """An authority admits a node: its origin log is replicated and merged by every node."""

    KIND: ClassVar[str] = "node.admit"
    node: bytes = spec(_bytes32)
    name: str = spec(_reason)


@dataclass(frozen=True)
class RunReserveBody(Body):
    """Reserve a run's estimated cost (milli-T) before it starts; pending until posted, voided or expired."""

    KIND: ClassVar[str] = "run.reserve"
    METRICS: ClassVar[tuple[str, ...]] = ("cost", "tokens")
    run: bytes = spec(_bytes16)
    op: str = spec(_op)
    tokens: int = spec(_uint)
    cost: int | None = spec(_uint, required=False)
    tools: tuple[str, ...] | None = spec(_tools, required=False)
    timeout: int = spec(_uint)


@dataclass(frozen=True)
class RunChargeBody(Body):
    """Actual spend of an open run so far (adds to it); the receipt says when to stop."""

    KIND: ClassVar[str] = "run.charge"
    METRICS: ClassVar[tuple[str, ...]] = ("cost", "tokens")
    run: bytes = spec(_bytes16)
    cost: int = spec(_uint)
    tokens: int = spec(_uint)


@dataclass(frozen=True)
class RunPostBody(Body):
    """Close a run with its final charge and, optionally, its task performance score (× 1000)."""

    KIND: ClassVar[str] = "run.post"
    METRICS: ClassVar[tuple[str, ...]] = ("cost", "tokens")
    run: bytes = spec(_bytes16)
    cost: int = spec(_uint)
    tokens: int = spec(_uint)
    score: int | None = spec(_score, required=False)


@dataclass(frozen=True)
class RunVoidBody(PolicyBody):
    """Cancel a pending run: its reservation is released, nothing is charged."""

    KIND: ClassVar[str] = "run.void"
    run: bytes = spec(_bytes16)

