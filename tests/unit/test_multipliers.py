"""ledger.multipliers: exact tier boundaries, exact rational limits, and governance tables."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import Invalid
from ledger.multipliers import (
    REPUTATION_TIERS,
    STAKE_TIERS,
    effective_limit,
    reputation_multiplier,
    stake_multiplier,
    validate_tiers,
)

stakes = st.integers(min_value=0, max_value=10**9)
scores = st.integers(min_value=0, max_value=1_000_000)
bases = st.integers(min_value=0, max_value=10**13)


def test_default_tables_are_as_the_issue_lists_them() -> None:
    assert STAKE_TIERS == ((20_000, Fraction(2)), (5_000, Fraction(3, 2)), (1_000, Fraction(5, 4)), (0, Fraction(1)))
    assert REPUTATION_TIERS == ((900_000, Fraction(3, 2)), (800_000, Fraction(6, 5)), (700_000, Fraction(1)),
                                (500_000, Fraction(4, 5)), (0, Fraction(1, 2)))


@pytest.mark.parametrize(("stake", "expected"), [
    (0, Fraction(1)), (999, Fraction(1)), (1_000, Fraction(5, 4)), (4_999, Fraction(5, 4)),
    (5_000, Fraction(3, 2)), (19_999, Fraction(3, 2)), (20_000, Fraction(2)), (10**12, Fraction(2)),
])
def test_stake_multiplier_at_and_below_each_threshold(stake: int, expected: Fraction) -> None:
    assert stake_multiplier(stake) == expected


@pytest.mark.parametrize(("score", "expected"), [
    (1_000_000, Fraction(3, 2)), (900_000, Fraction(3, 2)), (899_999, Fraction(6, 5)), (800_000, Fraction(6, 5)),
    (799_999, Fraction(1)), (700_000, Fraction(1)), (699_999, Fraction(4, 5)), (500_000, Fraction(4, 5)),
    (499_999, Fraction(1, 2)), (0, Fraction(1, 2)),
])
def test_reputation_multiplier_at_and_below_each_threshold(score: int, expected: Fraction) -> None:
    assert reputation_multiplier(score) == expected


@given(st.sampled_from(STAKE_TIERS[:-1]))
def test_each_stake_threshold_is_exact(tier: tuple[int, Fraction]) -> None:
    threshold, multiplier = tier
    below = STAKE_TIERS[STAKE_TIERS.index(tier) + 1][1]
    assert stake_multiplier(threshold - 1) == below
    assert stake_multiplier(threshold) == multiplier


@given(st.data())
def test_every_stake_inside_a_tier_gets_that_tier(data: st.DataObject) -> None:
    i = data.draw(st.integers(min_value=0, max_value=len(STAKE_TIERS) - 1))
    threshold, multiplier = STAKE_TIERS[i]
    upper = STAKE_TIERS[i - 1][0] - 1 if i > 0 else 10**12
    assert stake_multiplier(data.draw(st.integers(min_value=threshold, max_value=upper))) == multiplier


@given(st.sampled_from(REPUTATION_TIERS[:-1]))
def test_each_reputation_threshold_is_exact(tier: tuple[int, Fraction]) -> None:
    threshold, multiplier = tier
    below = REPUTATION_TIERS[REPUTATION_TIERS.index(tier) + 1][1]
    assert reputation_multiplier(threshold - 1) == below
    assert reputation_multiplier(threshold) == multiplier


@given(stakes)
def test_stake_multiplier_matches_a_naive_reading_of_the_issue(stake: int) -> None:
    naive = (Fraction(2) if stake >= 20_000 else Fraction(3, 2) if stake >= 5_000
             else Fraction(5, 4) if stake >= 1_000 else Fraction(1))
    assert stake_multiplier(stake) == naive


@given(scores)
def test_reputation_multiplier_matches_a_naive_reading_of_the_issue(score: int) -> None:
    s = Fraction(score, 1_000_000)
    naive = (Fraction(3, 2) if s >= Fraction(9, 10) else Fraction(6, 5) if s >= Fraction(8, 10)
             else Fraction(1) if s >= Fraction(7, 10) else Fraction(4, 5) if s >= Fraction(5, 10) else Fraction(1, 2))
    assert reputation_multiplier(score) == naive


@given(bases)
def test_a_new_agent_without_stake_gets_exactly_the_base(base: int) -> None:
    assert effective_limit(base, 0, 750_000) == base


@given(bases, stakes, scores)
def test_effective_limit_is_the_floor_of_the_exact_product(base: int, stake: int, score: int) -> None:
    limit = effective_limit(base, stake, score)
    exact = base * stake_multiplier(stake) * reputation_multiplier(score)
    assert type(limit) is int
    assert limit <= exact < limit + 1


@given(bases, stakes, stakes, scores)
def test_effective_limit_is_monotone_in_stake(base: int, a: int, b: int, score: int) -> None:
    lo, hi = sorted((a, b))
    assert effective_limit(base, lo, score) <= effective_limit(base, hi, score)


@given(bases, stakes, scores, scores)
def test_effective_limit_is_monotone_in_score(base: int, stake: int, a: int, b: int) -> None:
    lo, hi = sorted((a, b))
    assert effective_limit(base, stake, lo) <= effective_limit(base, stake, hi)


@given(stakes, scores)
def test_by_contract_stays_unlimited(stake: int, score: int) -> None:
    assert effective_limit(None, stake, score) is None


def test_extremes_of_the_default_tables() -> None:
    assert effective_limit(20, 20_000, 900_000) == 60  # 20 x 2 x 3/2
    assert effective_limit(20, 0, 0) == 10  # 20 x 1 x 1/2
    assert effective_limit(50_000, 1_000, 500_000) == 50_000  # x5/4 x4/5 = x1 exactly
    assert effective_limit(3, 1_000, 800_000) == 4  # 3 x 3/2 = 4.5, floored


@pytest.mark.parametrize(("args", "code"), [
    ((10, -1, 750_000), "bad_parameter"), ((10, 0, -1), "bad_parameter"), ((10, 0, 1_000_001), "bad_parameter"),
    ((-1, 0, 750_000), "bad_parameter"), ((None, -5, 750_000), "bad_parameter"), ((10, 1.5, 750_000), "bad_parameter"),
])
def test_bad_arguments_are_rejected(args: tuple, code: str) -> None:
    with pytest.raises(Invalid) as e:
        effective_limit(*args)
    assert e.value.code == code


def test_governance_tables_replace_the_defaults() -> None:
    stake_tiers = ((100, Fraction(3)), (0, Fraction(1)))
    reputation_tiers = ((0, Fraction(1)),)
    assert effective_limit(10, 100, 0, stake_tiers=stake_tiers, reputation_tiers=reputation_tiers) == 30
    assert effective_limit(10, 99, 0, stake_tiers=stake_tiers, reputation_tiers=reputation_tiers) == 10
    assert stake_multiplier(100, stake_tiers) == 3
    assert reputation_multiplier(0, reputation_tiers) == 1


@pytest.mark.parametrize("tiers", [
    (),  # empty
    ((0, Fraction(1)), (1_000, Fraction(2))),  # ascending, not sorted highest first
    ((1_000, Fraction(2)), (1_000, Fraction(3, 2)), (0, Fraction(1))),  # duplicate threshold
    ((1_000, Fraction(0)), (0, Fraction(0))),  # zero multiplier
    ((1_000, Fraction(2)), (0, Fraction(-1))),  # negative multiplier
    ((1_000, Fraction(2)), (10, Fraction(1))),  # no tier for values below 10
    ((1_000, 2.0), (0, Fraction(1))),  # float multiplier
    ((1_000, Fraction(1)), (0, Fraction(2))),  # more stake would lower the limit
    ((-1, Fraction(1)),),  # negative threshold
    [(0, Fraction(1))],  # not a tuple
    ((0, Fraction(1), 3),),  # not a pair
])
def test_bad_tier_tables_are_rejected_with_invalid_policy(tiers: object) -> None:
    with pytest.raises(Invalid) as e:
        validate_tiers(tiers)  # type: ignore[arg-type]
    assert e.value.code == "invalid_policy"
    with pytest.raises(Invalid):
        effective_limit(10, 0, 750_000, stake_tiers=tiers)  # type: ignore[arg-type]


def test_default_tables_validate() -> None:
    assert validate_tiers(STAKE_TIERS) is STAKE_TIERS
    assert validate_tiers(REPUTATION_TIERS) is REPUTATION_TIERS
