"""Plans: the base quota limits of each tier, before stake and reputation multipliers.

A limit of None means "by contract": unlimited until governance sets contract limits with
`with_overrides`. The effective limit of an agent is computed by `ledger.multipliers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from ledger.errors import Invalid

# Quota name -> (metric it limits, window it is counted in). Windows are UTC-aligned (windows.py).
#   act.runs        ACT events (agent runs)
#   act.llm_tokens  LLM tokens reported by ACT events
#   dat.written     DAT bytes written
#   act.messages    ACT events whose op starts with "message."
#   events          all metering events
QUOTA_METRICS: dict[str, tuple[str, str]] = {
    "agent_runs_per_day": ("act.runs", "day"),
    "llm_tokens_per_day": ("act.llm_tokens", "day"),
    "storage_bytes_per_day": ("dat.written", "day"),
    "messages_per_day": ("act.messages", "day"),
    "events_per_minute": ("events", "minute"),
}
QUOTAS: tuple[str, ...] = tuple(QUOTA_METRICS)


def _limits(limits: Mapping[str, int | None], code: str) -> Mapping[str, int | None]:
    """A read-only copy of limits in QUOTAS order; raises Invalid(code) on a bad name or value."""
    unknown = sorted(set(limits) - set(QUOTAS))
    if unknown:
        raise Invalid(code, f"unknown quota names {unknown}; known: {list(QUOTAS)}")
    for name, value in limits.items():
        # bool is an int subclass; True as a limit is a policy typo, not a count.
        if value is not None and (type(value) is not int or value < 0):
            raise Invalid(code, f"limit {name} must be an integer >= 0 or None, got {value!r}")
    return MappingProxyType({name: limits[name] for name in QUOTAS if name in limits})


@dataclass(frozen=True)
class Plan:
    """A named plan with a limit for every quota in QUOTAS (None = by contract, unlimited).

    Raises Invalid("invalid_policy") unless `limits` names exactly the QUOTAS, each an int >= 0
    or None. `limits` is stored as a read-only mapping in QUOTAS order.
    """

    name: str
    limits: Mapping[str, int | None]

    def __post_init__(self) -> None:
        limits = _limits(self.limits, "invalid_policy")
        missing = [q for q in QUOTAS if q not in limits]
        if missing:
            raise Invalid("invalid_policy", f"plan {self.name!r} has no limit for {missing}")
        object.__setattr__(self, "limits", limits)

    def __hash__(self) -> int:
        return hash((self.name, tuple(self.limits.items())))


def _plan(name: str, runs: int | None, tokens: int | None, storage_bytes: int | None,
          messages: int | None, events: int | None) -> Plan:
    return Plan(name, dict(zip(QUOTAS, (runs, tokens, storage_bytes, messages, events))))


# Keyed by the plan's lowercase name, which is also Plan.name.
PLANS: dict[str, Plan] = {
    p.name: p
    for p in (
        _plan("freemium", 20, 50_000, 100_000_000, 200, 60),
        _plan("casual", 100, 200_000, 1_000_000_000, 1_000, 300),
        _plan("premium", 500, 1_000_000, 10_000_000_000, 10_000, 1_200),
        # "By contract": unlimited until governance sets contract limits (with_overrides).
        _plan("platformium", None, None, None, None, None),
    )
}


def plan_named(name: str) -> Plan:
    """The plan with this exact lowercase name; raises Invalid("unknown_plan")."""
    plan = PLANS.get(name)
    if plan is None:
        raise Invalid("unknown_plan", f"unknown plan {name!r}; known: {sorted(PLANS)}")
    return plan


def with_overrides(plan: Plan, overrides: Mapping[str, int | None]) -> Plan:
    """plan with some limits replaced (governance "by contract" limits).

    Each override is an int >= 0, or None for unlimited. Raises Invalid("invalid_policy") on a
    negative or non-integer value or an unknown quota name.
    """
    merged = dict(plan.limits)
    merged.update(_limits(overrides, "invalid_policy"))
    return Plan(plan.name, merged)
