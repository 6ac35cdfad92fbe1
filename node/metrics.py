"""Prometheus text exposition (format 0.0.4) for the node's counters and histograms.

Hand-written because the node needs only counters, gauges and fixed-bucket
histograms; the format is small and stable.
"""

from __future__ import annotations

import math
from typing import Callable

LATENCY_BUCKETS_S = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in sorted(labels.items()))
    return "{" + inner + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    if value == math.inf:
        return "+Inf"
    if float(value).is_integer():
        return str(int(value))
    return repr(float(value))


class Counter:
    def __init__(self, name: str, help: str, label_names: tuple[str, ...] = ()):
        self.name, self.help, self.label_names = name, help, label_names
        self.values: dict[tuple[str, ...], float] = {}

    def inc(self, amount: float = 1, *labels: str) -> None:
        self.values[labels] = self.values.get(labels, 0) + amount

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} counter"]
        for labels, value in sorted(self.values.items()):
            lines.append(f"{self.name}{_labels(dict(zip(self.label_names, labels)))} {_num(value)}")
        if not self.values and not self.label_names:
            lines.append(f"{self.name} 0")
        return lines


class Gauge:
    def __init__(self, name: str, help: str, read: Callable[[], float]):
        self.name, self.help, self.read = name, help, read

    def render(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} gauge", f"{self.name} {_num(self.read())}"]


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...]):
        self.name, self.help, self.buckets = name, help, buckets
        self.counts = [0] * (len(buckets) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.sum += value
        self.count += 1
        for i, bound in enumerate(self.buckets):
            if value <= bound:
                self.counts[i] += 1
                return
        self.counts[-1] += 1

    def render(self) -> list[str]:
        lines = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        cumulative = 0
        for bound, n in zip(self.buckets + (math.inf,), self.counts):
            cumulative += n
            lines.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {cumulative}')
        lines.append(f"{self.name}_sum {_num(self.sum)}")
        lines.append(f"{self.name}_count {self.count}")
        return lines


class NodeMetrics:
    """Every metric the node exports; `render()` gives the /metrics body."""

    def __init__(self, log_size: Callable[[], float], checkpoint_size: Callable[[], float]):
        self.events = Counter(
            "ats_events_total", "Submitted envelopes by outcome (accepted, duplicate, or an error code).", ("outcome",)
        )
        self.requests = Counter("ats_http_requests_total", "HTTP requests by route and status.", ("route", "status"))
        self.batch_events = Histogram("ats_commit_batch_events", "Events appended per commit (one checkpoint each).", SIZE_BUCKETS)
        self.commit_seconds = Histogram("ats_commit_seconds", "Time to commit one batch (transaction + fsync).", LATENCY_BUCKETS_S)
        self.submit_seconds = Histogram("ats_submit_seconds", "Time from request to durable receipt.", LATENCY_BUCKETS_S)
        self.verify_seconds = Histogram("ats_verify_seconds", "Signature verification time per request.", LATENCY_BUCKETS_S)
        self.checkpoints = Counter("ats_checkpoints_total", "Checkpoints signed.")
        self.anomalies = Counter("ats_anomalies_total", "Usage spikes flagged at ingest, by metric (docs/reports.md).", ("metric",))
        self.extra: list[Callable[[], list[str]]] = []  # more families (the exporters' ats_export_*)
        self.gateway_calls = Counter(
            "ats_gateway_calls_total", "LLM gateway calls by outcome: charged, reservation (charged at it), released"
            " (the upstream refused or was unreachable), or the code of a refusal (docs/gateway.md).", ("outcome",))
        self.gateway_cost = Counter("ats_gateway_cost_milli_total", "milli-T charged for LLM gateway calls.")
        self.gauges = [
            Gauge("ats_log_size", "Entries in this node's own origin log.", log_size),
            Gauge("ats_checkpoint_size", "Tree size of the latest signed checkpoint.", checkpoint_size),
        ]

    def render(self, budgets: list[dict] | None = None) -> str:
        """The /metrics body; budgets: views from node.reports.Reports.budget_samples, if read."""
        lines: list[str] = []
        for metric in (
            self.events,
            self.requests,
            self.batch_events,
            self.commit_seconds,
            self.submit_seconds,
            self.verify_seconds,
            self.checkpoints,
            self.anomalies,
            self.gateway_calls,
            self.gateway_cost,
            *self.gauges,
        ):
            lines.extend(metric.render())
        lines.extend(self._admissions())
        for more in self.extra:
            lines.extend(more())
        if budgets is not None:
            lines.extend(budget_lines(budgets))
        return "\n".join(lines) + "\n"

    def _admissions(self) -> list[str]:
        """Admissions by status and rejections by code, derived from ats_events_total's outcomes."""
        admissions = Counter("ats_admissions_total", "Submitted envelopes by status: accepted, duplicate or rejected.", ("status",))
        rejections = Counter("ats_rejections_total", "Rejected envelopes by error code.", ("code",))
        for status in ("accepted", "duplicate", "rejected"):
            admissions.values[(status,)] = 0
        for (outcome,), n in self.events.values.items():
            if outcome in ("accepted", "duplicate"):
                admissions.inc(n, outcome)
            else:
                admissions.inc(n, "rejected")
                rejections.inc(n, outcome)
        return admissions.render() + rejections.render()


BUDGET_STATUSES = ("healthy", "normal", "warning", "critical")


def budget_lines(views: list[dict]) -> list[str]:
    """Gauges of budgets (consumed, limit, status) per scope, metric and window, from budget views."""
    consumed = ["# HELP ats_budget_consumed Amount consumed in the current window (unit of the metric).",
                "# TYPE ats_budget_consumed gauge"]
    limit = ["# HELP ats_budget_limit Limit of the current window (unit of the metric).", "# TYPE ats_budget_limit gauge"]
    state = ["# HELP ats_budget_status 1 for the budget's current status (healthy, normal, warning, critical).",
             "# TYPE ats_budget_status gauge"]
    seen = set()
    for v in views:
        labels = {"scope": v["scope"], "scope_id": v["scope_id"], "metric": v["metric"], "window": v["window"]}
        key = tuple(labels.values())
        if key in seen:
            continue
        seen.add(key)
        consumed.append(f"ats_budget_consumed{_labels(labels)} {_num(v['consumed'])}")
        limit.append(f"ats_budget_limit{_labels(labels)} {_num(v['allocated'])}")
        for s in BUDGET_STATUSES:
            state.append(f"ats_budget_status{_labels({**labels, 'status': s})} {1 if v['status'] == s else 0}")
    return consumed + limit + state
