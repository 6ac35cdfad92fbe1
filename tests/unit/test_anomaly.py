"""The streaming spike detector (ledger/anomaly.py): warm-up, detection, hysteresis, bounded state."""

from __future__ import annotations

import math
import random

from hypothesis import given, settings, strategies as st

from ledger.anomaly import ADAPT_AFTER, WARMUP_DEFAULT, AgentDetectors, Detector


def steady(rng: random.Random, n: int, level: float = 1000, sigma: float = 0.3) -> list[int]:
    return [int(level * math.exp(rng.gauss(0, sigma))) for _ in range(n)]


def test_ten_times_spike_is_flagged_within_five_events_once_per_burst() -> None:
    det = Detector("act.cost")
    rng = random.Random(1)
    assert not [a for a in (det.observe(v) for v in steady(rng, 200)) if a]
    hits = [det.observe(v * 10) for v in steady(rng, 30)]
    flagged = [i for i, a in enumerate(hits) if a]
    assert flagged and flagged[0] < 5
    assert len(flagged) == 1  # hysteresis: one anomaly for the whole burst
    assert hits[flagged[0]].value > 2.5 * hits[flagged[0]].expected


def test_nothing_is_flagged_during_warm_up() -> None:
    det = Detector("act.cost")
    values = [10] * 5 + [100_000] * (WARMUP_DEFAULT - 5)
    assert all(det.observe(v) is None for v in values)


def test_rate_spike_of_ten_times_is_flagged() -> None:
    det = AgentDetectors()
    rng = random.Random(3)
    ts = 0
    for _ in range(300):
        ts += int(rng.expovariate(1 / 1000))
        det.observe(ts, {})
    found = []
    for _ in range(20):
        ts += max(1, int(rng.expovariate(1 / 100)))
        found += det.observe(ts, {})
    assert [a.metric for a in found] == ["rate"]


def test_a_lasting_new_level_becomes_the_baseline() -> None:
    det = Detector("act.cost")
    for _ in range(100):
        det.observe(1000)
    hits = [det.observe(10_000) for _ in range(ADAPT_AFTER + 50)]
    assert sum(a is not None for a in hits) == 1
    assert not det.anomalous and det.observe(10_000) is None


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=2**40), max_size=300), st.integers(min_value=0, max_value=2**20))
def test_state_stays_constant_size_and_finite_on_any_input(values: list[int], seed: int) -> None:
    det = AgentDetectors()
    ts = seed
    for v in values:
        ts += v % 5000
        det.observe(ts, {"act.cost": v, "dat.bytes": v // 3, "events": 1})
    assert set(det.detectors) <= {"act.cost", "dat.bytes", "rate"}  # counts of one are not observed
    for d in det.detectors.values():
        assert len(d.ring) == 4 and math.isfinite(d.mean) and math.isfinite(d.var) and d.var >= 0


def test_same_observations_give_the_same_anomalies() -> None:
    values = steady(random.Random(9), 100) + [50_000] * 5
    runs = []
    for _ in range(2):
        det = Detector("act.cost")
        runs.append([(a.metric, a.score) for a in (det.observe(v) for v in values) if a])
    assert runs[0] == runs[1] and runs[0]
