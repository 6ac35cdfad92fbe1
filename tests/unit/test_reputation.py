"""ledger.reputation: integer decay against a high-precision oracle, and a deterministic score.

Tolerance of the fixed-point decay (documented in decay_q32): exact at whole half-lives, and
within 1 unit of 2^-32 of 2^(-age/halflife) elsewhere. The oracle below is decimal arithmetic at
60 significant digits, independent of the integer code.
"""

from __future__ import annotations

import random
from decimal import Decimal, localcontext
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import Invalid
from ledger.multipliers import effective_limit, reputation_multiplier
from ledger.reputation import (
    DECAY_ONE,
    PRIOR_NEG_MILLI,
    PRIOR_POS_MILLI,
    ROLE_WEIGHTS_PPM,
    Rating,
    anomaly_penalty_milli,
    decay_q32,
    evidence,
    performance_trust,
    score_ppm,
)

NOW_MS = 1_700_000_000_000
DAY_S = 86_400
# score_ppm of the fixed history in test_a_fixed_history_gives_this_exact_score_on_every_node; the
# decimal oracle gives 666732.0574..., and the score is floored.
GOLDEN_SCORE_PPM = 666_732


def rating(value_milli: int, *, age_ms: int = 0, halflife_s: int = DAY_S, role: str = "user",
           type_: str = "task.performance") -> Rating:
    return Rating(NOW_MS - age_ms, value_milli, halflife_s, role, type_)


ratings_st = st.builds(
    Rating,
    ts_ms=st.integers(min_value=NOW_MS - 400 * DAY_S * 1000, max_value=NOW_MS + 10_000),
    value_milli=st.integers(min_value=-1000, max_value=1000),
    halflife_s=st.sampled_from([0, 1, 60, 3_600, DAY_S, 7 * DAY_S, 30 * DAY_S]),
    issuer_role=st.sampled_from(sorted(ROLE_WEIGHTS_PPM)),
    type=st.sampled_from(["task.performance", "anomaly.usage", "user.review"]),
)


def oracle_decay(age_ms: int, halflife_ms: int) -> Decimal:
    with localcontext() as ctx:
        ctx.prec = 60
        return Decimal(2) ** (-Decimal(age_ms) / Decimal(halflife_ms))


def oracle_score(ratings: list[Rating], at_ms: int) -> Decimal:
    """The module docstring's formula, read naively, in 60-digit decimal arithmetic."""
    with localcontext() as ctx:
        ctx.prec = 60
        pos = neg = Decimal(0)
        for r in ratings:
            if r.ts_ms > at_ms:
                continue
            decay = Decimal(1) if r.halflife_s == 0 else oracle_decay(at_ms - r.ts_ms, r.halflife_s * 1000)
            amount = Decimal(abs(r.value_milli)) * Decimal(ROLE_WEIGHTS_PPM[r.issuer_role]) / 10**6 * decay
            pos, neg = (pos + amount, neg) if r.value_milli > 0 else (pos, neg + amount)
        return (pos + PRIOR_POS_MILLI) * 10**6 / (pos + neg + PRIOR_POS_MILLI + PRIOR_NEG_MILLI)


# --- decay ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("halvings", range(0, 40))
def test_whole_half_lives_decay_exactly_by_shifts(halvings: int) -> None:
    assert decay_q32(halvings * 86_400_000, 86_400_000) == DECAY_ONE >> halvings


def test_a_rating_one_half_life_old_counts_exactly_half() -> None:
    assert decay_q32(3_600_000, 3_600_000) == DECAY_ONE // 2
    old = score_ppm([rating(1000, age_ms=DAY_S * 1000)], NOW_MS)
    assert old == score_ppm([rating(500)], NOW_MS) == 777_777  # 3500 / 4500, floored
    assert evidence([rating(1000, age_ms=DAY_S * 1000)], NOW_MS) == evidence([rating(500)], NOW_MS)


def test_halflife_zero_never_decays() -> None:
    assert decay_q32(10**15, 0) == DECAY_ONE
    assert score_ppm([rating(1000, age_ms=10**12, halflife_s=0)], NOW_MS) == score_ppm([rating(1000)], NOW_MS)


@settings(max_examples=500)
@given(st.integers(min_value=0, max_value=40 * 10**9), st.integers(min_value=1, max_value=10**9))
def test_decay_is_within_one_unit_of_2_pow_minus_32_of_the_oracle(age_ms: int, halflife_ms: int) -> None:
    got = decay_q32(age_ms, halflife_ms)
    exact = oracle_decay(age_ms, halflife_ms) * DECAY_ONE
    assert type(got) is int
    assert exact - 1 < got <= exact + 1
    if age_ms % halflife_ms == 0:
        assert got == DECAY_ONE >> (age_ms // halflife_ms) if age_ms // halflife_ms <= 64 else got == 0


@given(st.integers(min_value=0, max_value=10**10), st.integers(min_value=0, max_value=10**6),
       st.integers(min_value=1, max_value=10**8))
def test_decay_never_grows_with_age(age_ms: int, more_ms: int, halflife_ms: int) -> None:
    assert decay_q32(age_ms + more_ms, halflife_ms) <= decay_q32(age_ms, halflife_ms) <= DECAY_ONE


def test_negative_age_or_halflife_is_rejected() -> None:
    for args in ((-1, 1000), (1, -1000)):
        with pytest.raises(Invalid) as e:
            decay_q32(*args)
        assert e.value.code == "bad_parameter"


# --- score ---------------------------------------------------------------------------------------


def test_a_new_agent_scores_three_quarters_which_is_the_x1_tier() -> None:
    assert score_ppm([], NOW_MS) == 750_000
    assert reputation_multiplier(750_000) == 1
    assert effective_limit(20, 0, score_ppm([], NOW_MS)) == 20


def test_ratings_after_at_ms_are_ignored() -> None:
    assert score_ppm([rating(-1000, age_ms=-1)], NOW_MS) == 750_000
    assert score_ppm([rating(-1000, age_ms=-1)], NOW_MS + 1) < 750_000


def test_one_full_negative_rating_takes_a_new_agent_to_0_6() -> None:
    assert score_ppm([rating(-1000)], NOW_MS) == 600_000


def test_a_peer_counts_half_of_a_user_or_the_system() -> None:
    assert score_ppm([rating(1000, role="peer")], NOW_MS) == score_ppm([rating(500, role="user")], NOW_MS)
    assert score_ppm([rating(-800, role="system")], NOW_MS) == score_ppm([rating(-800, role="user")], NOW_MS)


def test_role_weights_are_a_parameter() -> None:
    weights = {"user": 1_000_000, "peer": 0, "system": 2_000_000, "oracle": 1_000_000}
    assert score_ppm([rating(1000, role="peer")], NOW_MS, role_weights_ppm=weights) == 750_000
    assert score_ppm([rating(-1000, role="oracle")], NOW_MS, role_weights_ppm=weights) == 600_000
    assert score_ppm([rating(500, role="system")], NOW_MS, role_weights_ppm=weights) == score_ppm(
        [rating(1000)], NOW_MS)


def test_unknown_role_and_negative_weight_are_rejected() -> None:
    with pytest.raises(Invalid) as e:
        score_ppm([rating(1000, role="oracle")], NOW_MS)
    assert e.value.code == "invalid_body"
    with pytest.raises(Invalid) as e:
        score_ppm([], NOW_MS, role_weights_ppm={"user": -1})
    assert e.value.code == "invalid_policy"


def test_a_fixed_history_gives_this_exact_score_on_every_node() -> None:
    # A golden value: any change in rounding, decay or weights shows up here.
    history = [
        rating(300, age_ms=3_600_000), rating(200, age_ms=5 * DAY_S * 1000 + 123_457, role="peer"),
        rating(-1000, age_ms=40 * DAY_S * 1000, halflife_s=30 * DAY_S, role="system"),
        rating(-300, age_ms=17, halflife_s=60), rating(100, age_ms=10**11, halflife_s=0),
    ]
    assert score_ppm(history, NOW_MS) == GOLDEN_SCORE_PPM


@settings(max_examples=200)
@given(st.lists(ratings_st, max_size=30), st.randoms(use_true_random=False))
def test_score_does_not_depend_on_the_order_of_ratings(ratings: list[Rating], rnd: random.Random) -> None:
    shuffled = list(ratings)
    rnd.shuffle(shuffled)
    assert score_ppm(shuffled, NOW_MS) == score_ppm(ratings, NOW_MS)
    assert score_ppm(reversed(ratings), NOW_MS) == score_ppm(iter(ratings), NOW_MS)


@settings(max_examples=200)
@given(st.lists(ratings_st, max_size=30))
def test_same_ratings_give_the_same_integer_score(ratings: list[Rating]) -> None:
    first = score_ppm(ratings, NOW_MS)
    again = score_ppm([Rating(r.ts_ms, r.value_milli, r.halflife_s, r.issuer_role, r.type) for r in ratings], NOW_MS)
    assert type(first) is int and first == again
    pos, neg = evidence(ratings, NOW_MS)
    assert type(pos) is int and type(neg) is int and pos >= 0 and neg >= 0


@settings(max_examples=200)
@given(st.lists(ratings_st, max_size=30))
def test_score_matches_the_decimal_oracle_within_one_ppm(ratings: list[Rating]) -> None:
    got = score_ppm(ratings, NOW_MS)
    exact = oracle_score(ratings, NOW_MS)
    assert exact - 1 <= got <= exact + Decimal("0.001")


@given(st.lists(st.builds(Rating, ts_ms=st.integers(min_value=0, max_value=NOW_MS),
                          value_milli=st.integers(min_value=-10**30, max_value=10**30),
                          halflife_s=st.integers(min_value=0, max_value=10**9),
                          issuer_role=st.sampled_from(sorted(ROLE_WEIGHTS_PPM)), type=st.just("x")), max_size=20))
def test_score_stays_in_0_to_1_000_000_for_any_values(ratings: list[Rating]) -> None:
    assert 0 <= score_ppm(ratings, NOW_MS) <= 1_000_000


def test_overwhelming_evidence_approaches_but_stays_inside_the_bounds() -> None:
    assert score_ppm([rating(10**40)], NOW_MS) == 999_999
    assert score_ppm([rating(-(10**40))], NOW_MS) == 0


@given(st.lists(ratings_st, max_size=20), st.integers(min_value=1, max_value=1000))
def test_a_positive_rating_never_lowers_and_a_negative_never_raises_the_score(ratings: list[Rating], v: int) -> None:
    base = score_ppm(ratings, NOW_MS)
    assert score_ppm(ratings + [rating(v)], NOW_MS) >= base
    assert score_ppm(ratings + [rating(-v)], NOW_MS) <= base


def test_rating_fields_are_checked() -> None:
    for args in ((NOW_MS, 1.5, 60, "user", "x"), (NOW_MS, 1, -1, "user", "x"), (float(NOW_MS), 1, 60, "user", "x"),
                 (NOW_MS, 1, 60, None, "x")):
        with pytest.raises(Invalid) as e:
            Rating(*args)  # type: ignore[arg-type]
        assert e.value.code == "invalid_body"


# --- rewards and penalties ---------------------------------------------------------------------


@pytest.mark.parametrize(("score", "trust"), [
    (1000, 300), (900, 200), (800, 100), (799, None), (650, None), (500, None), (499, -2), (250, -500), (0, -1000),
])
def test_performance_trust_at_the_boundaries(score: int, trust: int | None) -> None:
    assert performance_trust(score) == trust


@given(st.integers(min_value=0, max_value=1000))
def test_performance_trust_formula(score: int) -> None:
    expected = score - 700 if score >= 800 else -(500 - score) * 2 if score < 500 else None
    assert performance_trust(score) == expected


@pytest.mark.parametrize("score", [-1, 1001, 0.9, True])
def test_performance_scores_out_of_range_are_rejected(score: object) -> None:
    with pytest.raises(Invalid) as e:
        performance_trust(score)  # type: ignore[arg-type]
    assert e.value.code == "invalid_body"


@given(st.integers(min_value=1, max_value=10))
def test_anomaly_penalty_is_100_milli_per_severity_step(severity: int) -> None:
    assert anomaly_penalty_milli(severity) == -100 * severity < 0


@pytest.mark.parametrize("severity", [0, 11, -1, 2.0])
def test_anomaly_severity_out_of_range_is_rejected(severity: object) -> None:
    with pytest.raises(Invalid) as e:
        anomaly_penalty_milli(severity)  # type: ignore[arg-type]
    assert e.value.code == "invalid_body"


def test_a_bad_task_and_an_anomaly_cost_a_new_agent_its_x1_tier() -> None:
    history = [rating(performance_trust(300)), rating(anomaly_penalty_milli(5), type_="anomaly.usage")]
    assert score_ppm(history, NOW_MS) == 612_244  # 3000 / (4000 + 400 + 500), floored
    assert reputation_multiplier(score_ppm(history, NOW_MS)) == Fraction(4, 5)
