"""Usage reports, the pure part: periods, trends and plain-English recommendations.

A report covers one UTC period (day, ISO week from Monday, calendar month)
holding `at`, and compares it with the period just before. Everything here is
arithmetic on values passed in; node/reports.py reads the rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ledger import kinds as _kinds
from ledger.errors import Invalid
from ledger.windows import DAY_MS, HOUR_MS, window_bounds

PERIODS = ("day", "week", "month")
SCOPES = ("agent", "user", "team", "platform", "node")
# ledger.budget metric prefix -> the report's kind name; run records are ACT accounting.
# (ledger.kinds: each kind's group is in its registry entry)
KIND_GROUPS = _kinds.KIND_GROUPS
GROUPS = _kinds.GROUPS
COST_UP_PCT = 100  # "cost up sharply": at least doubled
COST_UP_MILLI_MIN = 1000  # ... from at least 1 T, so 0.001 T -> 0.002 T is not news
SOFT_DAYS_LOOKBACK = 7  # a day report looks at the week ending with it for daily soft-limit hits


@dataclass(frozen=True)
class Period:
    kind: str
    start_ms: int
    end_ms: int

    @property
    def bucket_ms(self) -> int:
        """Series buckets: hours for a day, days for a week or a month."""
        return HOUR_MS if self.kind == "day" else DAY_MS

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, "start_ms": self.start_ms, "end_ms": self.end_ms}


def _days_to_civil(days: int) -> tuple[int, int]:
    """(year, month) of a day count since 1970-01-01 (H. Hinnant, "chrono-compatible low-level date algorithms")."""
    z = days + 719_468
    era = z // 146_097
    doe = z - era * 146_097
    yoe = (doe - doe // 1460 + doe // 36_524 - doe // 146_096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    month = mp + 3 if mp < 10 else mp - 9
    return yoe + era * 400 + (1 if month <= 2 else 0), month


def _civil_to_days(year: int, month: int) -> int:
    """Days since 1970-01-01 of the first day of this month (same source)."""
    year -= 1 if month <= 2 else 0
    era = year // 400
    yoe = year - era * 400
    doy = (153 * (month + (-3 if month > 2 else 9)) + 2) // 5
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146_097 + doe - 719_468


def period_of(kind: str, at_ms: int) -> Period:
    """The UTC period of this kind holding at_ms; raises Invalid("bad_period")."""
    if kind not in PERIODS:
        raise Invalid("bad_period", f"period must be one of {', '.join(PERIODS)}")
    if kind in ("day", "week"):
        start, end = window_bounds(kind, at_ms)
        return Period(kind, start, end)
    year, month = _days_to_civil(at_ms // DAY_MS)
    nxt = (year + 1, 1) if month == 12 else (year, month + 1)
    return Period(kind, _civil_to_days(year, month) * DAY_MS, _civil_to_days(*nxt) * DAY_MS)


def previous(period: Period) -> Period:
    """The period of the same kind just before."""
    return period_of(period.kind, period.start_ms - 1)


def pct_change(now: int, before: int) -> float | None:
    """Change in % from before to now, one decimal; None when before is 0."""
    if before == 0:
        return None
    return round((now - before) * 100 / before, 1)


def _short(agent_hex: str) -> str:
    return agent_hex[:12] + "…"


def recommendations(*, soft_days: dict[str, tuple[int, int]], unused: list[dict[str, Any]], cost_mT: int,
                    previous_cost_mT: int, anomalies: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Plain-English advice from what the report found.

    soft_days: agent hex -> (days at or over a soft limit, days looked at); unused: budget views
    with a limit and nothing consumed over the period; anomalies: as the report lists them.
    """
    out: list[dict[str, str]] = []
    for agent, (hit, days) in sorted(soft_days.items()):
        if hit * 2 > days and hit >= 2:
            out.append({"code": "soft_limit_daily", "severity": "warning",
                        "text": f"Agent {_short(agent)} reached a soft limit on {hit} of the last {days} days. "
                                "Raise its budget or plan if this use is expected, or find out why it spends more."})
    for view in unused:
        out.append({"code": "budget_unused", "severity": "info",
                    "text": f"The {view['metric']} budget of {view['scope']} {_short(view['scope_id']) if len(view['scope_id']) == 64 else view['scope_id']}"
                            f" ({view['allocated']} per {view['window']}) was not used at all in this period. "
                            "Lower it or remove it so that unused allowance cannot be spent by surprise."})
    change = pct_change(cost_mT, previous_cost_mT)
    if change is not None and change >= COST_UP_PCT and cost_mT >= COST_UP_MILLI_MIN:
        out.append({"code": "cost_up", "severity": "warning",
                    "text": f"Cost rose {change:.0f} % from the previous period. "
                            "Check the agents and operations at the top of the breakdowns."})
    if anomalies:
        agents = sorted({a["agent"] for a in anomalies})
        who = ", ".join(_short(a) for a in agents[:3]) + (f" and {len(agents) - 3} more" if len(agents) > 3 else "")
        out.append({"code": "anomalies", "severity": "warning",
                    "text": f"{len(anomalies)} sudden usage spike{'s' if len(anomalies) != 1 else ''} flagged ({who}). "
                            "Each lowered the agent's trust score; check what these agents were doing."})
    return out
