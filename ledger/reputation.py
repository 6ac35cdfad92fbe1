"""Reputation: a deterministic score in parts per million from TRT ratings.

Theory of operation. Each rating is evidence: its positive part counts for the agent, its
negative part against. Evidence fades with the rating's own half-life, and is weighted by who
issued it. The score is the mean of a Beta distribution (Jøsang and Ismail, "The Beta
Reputation System", 2002) over that evidence plus a prior:

    P = Σ max(v, 0) × w(role) × decay        N = Σ max(-v, 0) × w(role) × decay
    score = (P + PRIOR_POS) / (P + N + PRIOR_POS + PRIOR_NEG)

decay = 2^(-(at_ms - ts_ms) / (halflife_s × 1000)), and 1 for a half-life of 0.

Every quantity is an integer: values in milli-units, weights in ppm, decay in Q32 fixed point
(DECAY_ONE = 2^32 is 1.0), so P and N are exact integers. Integer addition is exact and
commutative, so the score does not depend on the order of the ratings, and two nodes holding the
same ratings compute the same score bit for bit. Floats are never used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from math import isqrt
from types import MappingProxyType

from ledger.errors import Invalid, check

SCORE_PPM_MAX = 1_000_000
WEIGHT_PPM_ONE = 1_000_000
DECAY_BITS = 32
DECAY_ONE = 1 << DECAY_BITS

# The prior is 3 units of positive evidence and 1 of negative, in milli-units: a new agent
# scores 3/4 = 750_000 ppm, the middle of the x1 reputation tier [700_000, 800_000), so it
# neither gains nor loses quota. Four units of prior keep one rating from deciding a score:
# a single full negative rating (-1000) takes a new agent to 3000/5000 = 600_000 (x0.8), and it
# takes sustained evidence to reach the x1.5 tier (0.9 needs 6 units of fresh positive evidence).
PRIOR_POS_MILLI = 3_000
PRIOR_NEG_MILLI = 1_000

# Weight by issuer role, in ppm: users and the system speak for themselves; a peer's word counts
# half, because peers compete for the same budgets and may collude or retaliate.
ROLE_WEIGHTS_PPM: Mapping[str, int] = MappingProxyType({"system": 1_000_000, "user": 1_000_000, "peer": 500_000})

# Task performance (0..1000 milli) -> trust. A score >= 800 issues +(score - 700) (+100..+300);
# a score < 500 applies -(500 - score) x 2 (-2..-1000); between, nothing. Trust is lost twice as
# fast as it is earned, so a flaky agent cannot hold its reputation by alternating.
PERFORMANCE_MILLI_MAX = 1_000
PERFORMANCE_REWARD_MILLI_MIN = 800
PERFORMANCE_PENALTY_MILLI_BELOW = 500

# Usage anomalies: severity 1..10, each step -100 milli, so the worst is one full negative unit.
ANOMALY_SEVERITY_MAX = 10
ANOMALY_PENALTY_STEP_MILLI = 100


@dataclass(frozen=True)
class Rating:
    """One TRT rating: value_milli (may be negative) issued at ts_ms, fading with halflife_s.

    issuer_role is "user", "peer" or "system" (any key of the role weights); halflife_s 0 means
    the rating never fades. Raises Invalid("invalid_body") on non-integer fields or a negative
    half-life.
    """

    ts_ms: int
    value_milli: int
    halflife_s: int
    issuer_role: str
    type: str

    def __post_init__(self) -> None:
        for name in ("ts_ms", "value_milli", "halflife_s"):
            if type(getattr(self, name)) is not int:
                raise Invalid("invalid_body", f"rating {name} must be an integer, got {getattr(self, name)!r}")
        if self.halflife_s < 0:
            raise Invalid("invalid_body", f"rating halflife_s must be >= 0, got {self.halflife_s}")
        if not isinstance(self.issuer_role, str) or not isinstance(self.type, str):
            raise Invalid("invalid_body", "rating issuer_role and type must be strings")


def _halving_roots_q64() -> tuple[int, ...]:
    """2^(-2^-i) in Q64 for i = 1..DECAY_BITS, by repeated integer square roots of 1/2."""
    # Work at 128 fractional bits so the floors of isqrt stay far below the Q64 rounding.
    x = 1 << 127  # 0.5 in Q128
    roots = []
    for _ in range(DECAY_BITS):
        x = isqrt(x << 128)
        roots.append((x + (1 << 63)) >> 64)
    return tuple(roots)


# _ROOTS_Q64[i - 1] = 2^(-2^-i): the factor for bit i after the binary point of the exponent.
_ROOTS_Q64 = _halving_roots_q64()
check(_ROOTS_Q64[0] ** 2 >> 64 in range((1 << 63) - 2, (1 << 63) + 1), "sqrt(1/2)^2 is 1/2 in Q64")


def decay_q32(age_ms: int, halflife_ms: int) -> int:
    """floor(2^32 × 2^(-age_ms / halflife_ms)), within 1 of exact; 2^32 if halflife_ms is 0.

    Integer parts of the exponent are shifts; its first 32 fractional bits pick factors from a
    table of 2^(-2^-i) built with integer square roots. Truncating the exponent to 32 bits errs
    by under 0.7 units of 2^-32, and the one final floor by under 1, so the result is exact at
    whole half-lives (age = k × halflife gives 2^32 >> k) and within 1 unit elsewhere.
    Raises Invalid("bad_parameter") on a negative age or half-life.
    """
    if age_ms < 0 or halflife_ms < 0:
        raise Invalid("bad_parameter", f"age_ms and halflife_ms must be >= 0, got {age_ms}, {halflife_ms}")
    if halflife_ms == 0:
        return DECAY_ONE
    halvings, rem_ms = divmod(age_ms, halflife_ms)
    if halvings > DECAY_BITS:
        return 0
    frac_q32 = (rem_ms << DECAY_BITS) // halflife_ms
    y_q64 = 1 << 64
    for i in range(1, DECAY_BITS + 1):
        if frac_q32 >> (DECAY_BITS - i) & 1:
            y_q64 = y_q64 * _ROOTS_Q64[i - 1] >> 64
    return y_q64 >> (64 - DECAY_BITS + halvings)


def _check_weights(role_weights_ppm: Mapping[str, int]) -> None:
    for role, weight in role_weights_ppm.items():
        if type(weight) is not int or weight < 0:
            raise Invalid("invalid_policy", f"weight of role {role!r} must be an integer ppm >= 0, got {weight!r}")


def evidence(ratings: Iterable[Rating], at_ms: int,
             role_weights_ppm: Mapping[str, int] = ROLE_WEIGHTS_PPM) -> tuple[int, int]:
    """(P, N): positive and negative evidence at at_ms, in milli × ppm × Q32 units (exact ints).

    Ratings with ts_ms > at_ms are ignored. Raises Invalid("invalid_body") on an issuer role
    that has no weight, Invalid("invalid_policy") on a negative weight.
    """
    _check_weights(role_weights_ppm)
    pos = neg = 0
    for r in ratings:
        if r.ts_ms > at_ms:
            continue
        weight = role_weights_ppm.get(r.issuer_role)
        if weight is None:
            raise Invalid("invalid_body", f"unknown issuer role {r.issuer_role!r}; known: {sorted(role_weights_ppm)}")
        amount = abs(r.value_milli) * weight * decay_q32(at_ms - r.ts_ms, r.halflife_s * 1000)
        if r.value_milli > 0:
            pos += amount
        else:
            neg += amount
    return pos, neg


def score_ppm(ratings: Iterable[Rating], at_ms: int, *,
              role_weights_ppm: Mapping[str, int] = ROLE_WEIGHTS_PPM) -> int:
    """The reputation score at at_ms in ppm (0..1_000_000), floored; 750_000 with no ratings.

    Independent of the order of ratings. Raises as `evidence` does.
    """
    pos, neg = evidence(ratings, at_ms, role_weights_ppm)
    unit = WEIGHT_PPM_ONE * DECAY_ONE  # one milli-unit of undecayed, full-weight evidence
    prior_pos, prior_neg = PRIOR_POS_MILLI * unit, PRIOR_NEG_MILLI * unit
    score = (pos + prior_pos) * SCORE_PPM_MAX // (pos + neg + prior_pos + prior_neg)
    # Both priors are positive, so the mean is in [0, 1]; checked, then clamped (P4).
    check(0 <= score <= SCORE_PPM_MAX, f"score {score} ppm out of range")
    return min(max(score, 0), SCORE_PPM_MAX)


def performance_trust(score_milli: int) -> int | None:
    """The TRT value_milli a task performance score (0..1000) issues, or None for no rating.

    >= 800: +(score - 700), i.e. +100..+300. < 500: -(500 - score) × 2, i.e. -2..-1000.
    Raises Invalid("invalid_body") on a score outside 0..1000.
    """
    if type(score_milli) is not int or not 0 <= score_milli <= PERFORMANCE_MILLI_MAX:
        raise Invalid("invalid_body", f"performance score must be an integer in 0..1000, got {score_milli!r}")
    if score_milli >= PERFORMANCE_REWARD_MILLI_MIN:
        return score_milli - 700
    if score_milli < PERFORMANCE_PENALTY_MILLI_BELOW:
        return -(PERFORMANCE_PENALTY_MILLI_BELOW - score_milli) * 2
    return None


def anomaly_penalty_milli(severity: int) -> int:
    """The (negative) TRT value_milli of a usage anomaly of severity 1..10: -100 × severity.

    Raises Invalid("invalid_body") on a severity outside 1..10.
    """
    if type(severity) is not int or not 1 <= severity <= ANOMALY_SEVERITY_MAX:
        raise Invalid("invalid_body", f"anomaly severity must be an integer in 1..{ANOMALY_SEVERITY_MAX}, got {severity!r}")
    return -ANOMALY_PENALTY_STEP_MILLI * severity
