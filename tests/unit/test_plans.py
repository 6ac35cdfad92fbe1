"""ledger.plans: plan values exactly as the issue lists them, lookups and governance overrides."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import CODES, Invalid
from ledger.plans import PLANS, QUOTA_METRICS, QUOTAS, Plan, plan_named, with_overrides

EXPECTED = {
    "freemium": (20, 50_000, 100_000_000, 200, 60),
    "casual": (100, 200_000, 1_000_000_000, 1_000, 300),
    "premium": (500, 1_000_000, 10_000_000_000, 10_000, 1_200),
    "platformium": (None, None, None, None, None),
}
ORDER = ("agent_runs_per_day", "llm_tokens_per_day", "storage_bytes_per_day", "messages_per_day",
         "events_per_minute")


def test_plans_hold_exactly_the_listed_limits() -> None:
    assert list(PLANS) == list(EXPECTED)
    for name, values in EXPECTED.items():
        assert PLANS[name].name == name
        assert dict(PLANS[name].limits) == dict(zip(ORDER, values))


def test_quota_metrics_name_metric_and_window_of_every_quota() -> None:
    assert QUOTAS == ORDER
    assert QUOTA_METRICS == {
        "agent_runs_per_day": ("act.runs", "day"),
        "llm_tokens_per_day": ("act.llm_tokens", "day"),
        "storage_bytes_per_day": ("dat.written", "day"),
        "messages_per_day": ("act.messages", "day"),
        "events_per_minute": ("events", "minute"),
    }


@pytest.mark.parametrize("name", list(EXPECTED))
def test_plan_named_finds_each_plan(name: str) -> None:
    assert plan_named(name) is PLANS[name]


@pytest.mark.parametrize("name", ["gold", "", "Freemium", "premium "])
def test_plan_named_rejects_unknown_names_with_unknown_plan(name: str) -> None:
    with pytest.raises(Invalid) as e:
        plan_named(name)
    assert e.value.code == "unknown_plan" and e.value.status_hint == 422


def test_new_codes_are_registered_as_invalid() -> None:
    assert CODES["unknown_plan"] == "Invalid" and CODES["invalid_policy"] == "Invalid"


def test_plans_are_immutable_and_hashable() -> None:
    plan = PLANS["casual"]
    with pytest.raises(TypeError):
        plan.limits["agent_runs_per_day"] = 1  # type: ignore[index]
    assert hash(plan) == hash(Plan("casual", dict(plan.limits)))
    assert plan == Plan("casual", dict(plan.limits))


def test_contract_overrides_set_platformium_limits_and_keep_the_rest_unlimited() -> None:
    plan = with_overrides(PLANS["platformium"], {"agent_runs_per_day": 5_000, "llm_tokens_per_day": 0})
    assert plan.name == "platformium"
    assert plan.limits["agent_runs_per_day"] == 5_000
    assert plan.limits["llm_tokens_per_day"] == 0
    assert plan.limits["events_per_minute"] is None
    assert PLANS["platformium"].limits["agent_runs_per_day"] is None  # the original is untouched


def test_override_with_none_makes_a_quota_unlimited() -> None:
    assert with_overrides(PLANS["freemium"], {"messages_per_day": None}).limits["messages_per_day"] is None


@given(st.sampled_from(ORDER), st.integers(max_value=-1))
def test_negative_overrides_are_rejected_with_invalid_policy(quota: str, value: int) -> None:
    with pytest.raises(Invalid) as e:
        with_overrides(PLANS["premium"], {quota: value})
    assert e.value.code == "invalid_policy"


@given(st.sampled_from(ORDER), st.integers(min_value=0, max_value=10**15))
def test_non_negative_overrides_are_taken_exactly(quota: str, value: int) -> None:
    plan = with_overrides(PLANS["premium"], {quota: value})
    assert plan.limits[quota] == value
    assert {q: v for q, v in plan.limits.items() if q != quota} == {
        q: v for q, v in PLANS["premium"].limits.items() if q != quota}


@pytest.mark.parametrize("overrides", [{"tokens": 1}, {"agent_runs_per_day": 1.5}, {"agent_runs_per_day": True},
                                       {"agent_runs_per_day": "10"}])
def test_overrides_with_unknown_names_or_non_integers_are_rejected(overrides: dict) -> None:
    with pytest.raises(Invalid) as e:
        with_overrides(PLANS["casual"], overrides)
    assert e.value.code == "invalid_policy"


def test_a_plan_must_limit_every_quota() -> None:
    with pytest.raises(Invalid) as e:
        Plan("partial", {"agent_runs_per_day": 1})
    assert e.value.code == "invalid_policy"
