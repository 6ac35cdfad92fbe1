"""Stake and reputation multipliers, and the effective limit they give.

    effective = floor(base × f(stake) × g(reputation score))

Everything is exact rational arithmetic (`fractions.Fraction`) with one floor at the end, so two
nodes that hold the same events compute the same limit, bit for bit. Floats never decide a limit.

A tier table is a tuple of (threshold, multiplier) pairs, highest threshold first; a value gets
the multiplier of the first tier whose threshold it reaches (value >= threshold). Governance may
replace the tables; `validate_tiers` states what a table must satisfy.
"""

from __future__ import annotations

from fractions import Fraction

from ledger.errors import Invalid, InvariantViolation

Tiers = tuple[tuple[int, Fraction], ...]

SCORE_PPM_MAX = 1_000_000

# Stake in whole stake units, as set by signed `stake.set` records from the oracle key.
STAKE_TIERS: Tiers = (
    (20_000, Fraction(2)),
    (5_000, Fraction(3, 2)),
    (1_000, Fraction(5, 4)),
    (0, Fraction(1)),
)

# Reputation score in parts per million (ledger/reputation.py). A new agent scores 750_000,
# which lands in the x1 tier.
REPUTATION_TIERS: Tiers = (
    (900_000, Fraction(3, 2)),
    (800_000, Fraction(6, 5)),
    (700_000, Fraction(1)),
    (500_000, Fraction(4, 5)),
    (0, Fraction(1, 2)),
)


def validate_tiers(tiers: Tiers) -> Tiers:
    """tiers, if it is a usable tier table; raises Invalid("invalid_policy") otherwise.

    A usable table is non-empty; its thresholds are ints >= 0, strictly decreasing (so sorted
    and without duplicates), ending at 0 so that every value has a tier; its multipliers are
    positive ints or Fractions (never floats), non-increasing down the table, so that more stake
    or a better score never lowers a limit.
    """
    if not isinstance(tiers, tuple) or not tiers:
        raise Invalid("invalid_policy", "a tier table is a non-empty tuple of (threshold, multiplier)")
    previous: tuple[int, Fraction] | None = None
    for tier in tiers:
        if not isinstance(tier, tuple) or len(tier) != 2:
            raise Invalid("invalid_policy", f"tier {tier!r} is not a (threshold, multiplier) pair")
        threshold, multiplier = tier
        if type(threshold) is not int or threshold < 0:
            raise Invalid("invalid_policy", f"threshold {threshold!r} is not an integer >= 0")
        if type(multiplier) not in (int, Fraction) or multiplier <= 0:
            raise Invalid("invalid_policy", f"multiplier {multiplier!r} is not a positive int or Fraction")
        if previous is not None:
            if threshold >= previous[0]:
                raise Invalid("invalid_policy", f"thresholds must strictly decrease: {previous[0]} then {threshold}")
            if multiplier > previous[1]:
                raise Invalid("invalid_policy", f"multiplier {multiplier} at {threshold} exceeds {previous[1]} above it")
        previous = (threshold, multiplier)
    if tiers[-1][0] != 0:
        raise Invalid("invalid_policy", f"the last threshold must be 0, not {tiers[-1][0]}")
    return tiers


def _tier(value: int, tiers: Tiers) -> Fraction:
    for threshold, multiplier in tiers:
        if value >= threshold:
            return Fraction(multiplier)
    # validate_tiers guarantees a 0 threshold, and value >= 0 was checked by the caller.
    raise InvariantViolation(f"no tier for {value} in {tiers!r}")


def stake_multiplier(stake: int, stake_tiers: Tiers = STAKE_TIERS) -> Fraction:
    """f(stake): the multiplier of the highest tier with threshold <= stake (unsigned int units).

    Raises Invalid("bad_parameter") on a negative or non-integer stake, Invalid("invalid_policy")
    on a bad table.
    """
    if type(stake) is not int or stake < 0:
        raise Invalid("bad_parameter", f"stake must be an integer >= 0, got {stake!r}")
    return _tier(stake, validate_tiers(stake_tiers))


def reputation_multiplier(score_ppm: int, reputation_tiers: Tiers = REPUTATION_TIERS) -> Fraction:
    """g(score): the multiplier of the highest tier with threshold <= score_ppm (0..1_000_000).

    Raises Invalid("bad_parameter") on a score outside 0..1_000_000, Invalid("invalid_policy")
    on a bad table.
    """
    if type(score_ppm) is not int or not 0 <= score_ppm <= SCORE_PPM_MAX:
        raise Invalid("bad_parameter", f"score_ppm must be an integer in 0..{SCORE_PPM_MAX}, got {score_ppm!r}")
    return _tier(score_ppm, validate_tiers(reputation_tiers))


def effective_limit(base: int | None, stake: int, score_ppm: int, *,
                    stake_tiers: Tiers = STAKE_TIERS, reputation_tiers: Tiers = REPUTATION_TIERS) -> int | None:
    """floor(base × f(stake) × g(score_ppm)) in the unit of base; None (by contract) stays None.

    Raises Invalid("bad_parameter") on a negative base, stake or out-of-range score, and
    Invalid("invalid_policy") on a bad tier table. The arguments are checked even when base is None.
    """
    f = stake_multiplier(stake, stake_tiers)
    g = reputation_multiplier(score_ppm, reputation_tiers)
    if base is None:
        return None
    if type(base) is not int or base < 0:
        raise Invalid("bad_parameter", f"base limit must be an integer >= 0 or None, got {base!r}")
    product = base * f * g
    # Fraction floor division is exact; // on numerator/denominator rounds towards -inf.
    return product.numerator // product.denominator


# Pair check (P4): the default tables must satisfy the rules governance tables are held to.
validate_tiers(STAKE_TIERS)
validate_tiers(REPUTATION_TIERS)
