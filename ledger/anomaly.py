"""Streaming spike detection per (agent, metric), in O(1) state and deterministic float math.

Theory of operation. Each admitted event gives every metric it charges one
observation: its amount (`act.cost`, `act.llm_tokens`, `dat.bytes`,
`cpt.units`, ...), and the `rate` metric gets the gap in ms since the agent's
previous event. A `Detector` keeps, for one agent and one metric:

* a ring of the last `WINDOW` raw values and their sum. Summing a few events
  before taking the log narrows the noise of heavy-tailed traffic (the log of a
  sum of 4 exponential gaps has a standard deviation of 0.53, one gap's 1.28),
  so a 10× spike stands out after a few events instead of being lost in noise;
* a slow EWMA of the mean and variance of x = log(1 + window sum), the
  baseline (`ALPHA`, about 64 events of memory). Updates are winsorised at
  `CLAMP_SD` standard deviations, so one outlier moves the baseline little (the
  robust part), and the standard deviation never goes under `SD_MIN` (a
  perfectly flat stream would otherwise flag a 1 % wobble).

The score is the z-score of x against the baseline, one-sided: only increases
count (for `rate`, x is minus the log of the gap sum: a shorter gap is more).
Nothing is flagged during the warm-up (`warmup` observations). Hysteresis
makes a burst one anomaly, not fifty: crossing `threshold` enters the
anomalous state and reports once; the baseline stops learning while
anomalous, and the state ends when the score falls under `threshold / 2`, or
after `ADAPT_AFTER` observations, when the new level is accepted as normal.

Everything is a function of the observations passed in: no clock, no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

WINDOW = 4  # observations summed before the log (see above)
ALPHA = 1 / 64  # baseline EWMA weight: about 64 observations of memory
CLAMP_SD = 3.0  # baseline updates are winsorised at this many standard deviations
SD_MIN = 0.25  # floor of the baseline's standard deviation, in natural-log units
ADAPT_AFTER = 64  # observations in the anomalous state before the new level is accepted
THRESHOLD_DEFAULT = 3.5
WARMUP_DEFAULT = 32
RATE = "rate"  # the metric of event rate, observed as the gap in ms since the previous event
# The ledger.budget metrics observed as amounts. Counts of one per event (events, act.runs,
# act.messages, trt.count) are left out: their spikes are spikes of `rate`.
OBSERVED = ("act.cost", "act.llm_tokens", "cpt.units", "dat.bytes")


@dataclass(frozen=True)
class Anomaly:
    """A spike: the windowed value, the baseline it departed from (same unit), its z-score."""

    metric: str
    value: float
    expected: float
    score: float


class Detector:
    """The spike detector of one (agent, metric); `observe(amount)` returns an Anomaly on entry only."""

    __slots__ = ("metric", "ring", "pos", "total", "n", "mean", "var", "anomalous", "held")

    def __init__(self, metric: str):
        self.metric = metric
        self.ring = [0] * WINDOW
        self.pos = 0
        self.total = 0
        self.n = 0  # observations seen (saturates at a large value; only compared to warm-up)
        self.mean = 0.0
        self.var = 0.0
        self.anomalous = False
        self.held = 0  # observations since the anomalous state began

    def _x(self) -> float:
        x = math.log1p(self.total)
        return -x if self.metric == RATE else x

    def _natural(self, x: float) -> float:
        """x back in the metric's unit: a mean amount per event, or events per second for rate."""
        if self.metric == RATE:
            return WINDOW * 1000 / max(1.0, math.expm1(-x))
        return max(0.0, math.expm1(x)) / WINDOW

    def observe(self, amount: int, *, threshold: float = THRESHOLD_DEFAULT,
                warmup: int = WARMUP_DEFAULT) -> Anomaly | None:
        """Add one observation (an amount >= 0, or a gap in ms for rate); an Anomaly when a spike begins."""
        amount = max(0, int(amount))
        self.total += amount - self.ring[self.pos]
        self.ring[self.pos] = amount
        self.pos = (self.pos + 1) % WINDOW
        self.n = min(self.n + 1, 1 << 30)
        x = self._x()
        if self.n < WINDOW:
            return None  # the window is not full yet: x is not comparable
        if self.n == WINDOW:
            self.mean, self.var = x, 0.0
            return None
        sd = max(SD_MIN, math.sqrt(self.var))
        score = (x - self.mean) / sd
        if self.anomalous:
            self.held += 1
            if score < threshold / 2:
                self.anomalous = False
            elif self.held >= ADAPT_AFTER:
                # a lasting new level: accept it as the baseline rather than flag forever
                self.anomalous = False
                self.mean = x
            return None
        if score >= threshold and self.n > warmup:
            self.anomalous, self.held = True, 0
            return Anomaly(self.metric, self._natural(x), self._natural(self.mean), score)
        self._learn(x, sd)
        return None

    def _learn(self, x: float, sd: float) -> None:
        d = max(-CLAMP_SD * sd, min(CLAMP_SD * sd, x - self.mean))
        self.mean += ALPHA * d
        # EWMA variance (West 1979 / Finch 2009, "Incremental calculation of weighted mean and variance")
        self.var = (1 - ALPHA) * (self.var + ALPHA * d * d)


class AgentDetectors:
    """Every detector of one agent, plus the ts of its last event (for the rate metric)."""

    __slots__ = ("detectors", "last_ts")

    def __init__(self) -> None:
        self.detectors: dict[str, Detector] = {}
        self.last_ts: int | None = None

    def observe(self, ts_ms: int, amounts: dict[str, int], *, threshold: float = THRESHOLD_DEFAULT,
                warmup: int = WARMUP_DEFAULT) -> list[Anomaly]:
        """One event of the agent at ts_ms charging these amounts; the spikes it begins, by metric name."""
        found: list[Anomaly] = []
        observations = {m: amounts[m] for m in OBSERVED if m in amounts}
        if self.last_ts is not None:
            observations[RATE] = max(0, ts_ms - self.last_ts)
        self.last_ts = ts_ms if self.last_ts is None else max(self.last_ts, ts_ms)
        for metric in sorted(observations):
            det = self.detectors.get(metric)
            if det is None:
                det = self.detectors[metric] = Detector(metric)
            hit = det.observe(observations[metric], threshold=threshold, warmup=warmup)
            if hit is not None:
                found.append(hit)
        return found
