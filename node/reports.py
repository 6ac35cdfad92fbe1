"""Usage reports: GET /v1/reports/{scope}/{id} and `ats report` (docs/reports.md).

A report is read in two steps. On the writer thread (the budget book's
owner), a snapshot: the scope's agents and their users, its budget views, and
the price table in force at each series bucket. Then, on a reader connection,
one indexed range per agent over the period and the period before, folded in
one pass: totals per kind and metric (ledger.budget.METRICS), cost
(ledger.pricing), breakdowns and the series. Only ACT events are decoded, for
their op (the table has no op column); the cost is linear in the events the
period holds (scripts/bench_reports.py measures it).
"""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import cbor2

from ledger.budget import METRICS
from ledger.errors import Invalid, NotFound
from ledger.events import KINDS
from ledger.pricing import event_cost_milli, format_t
from ledger.reports import GROUPS, KIND_GROUPS, SCOPES, SOFT_DAYS_LOOKBACK, Period, pct_change, period_of, previous, recommendations
from ledger.windows import DAY_MS, window_bounds
from node.budgets import BudgetBook
from node.store import reports as report_store
from node.store.sqlite import Connection, Database

BREAKDOWN_ROWS_MAX = 20  # rows of by_agent, by_member and by_operation before "others"
ANOMALIES_MAX = 100
# Metrics each kind's totals show: those of ledger.budget.METRICS named after the kind.
GROUP_METRICS = {g: tuple(m for m in METRICS if m.startswith(g.lower() + ".")) for g in GROUPS}


def _op(envelope: bytes) -> str:
    """The op of a stored ACT envelope (already verified at admission: a plain decode suffices)."""
    return cbor2.loads(cbor2.loads(envelope)["event"])["body"]["op"]


class _Fold:
    """One period's sums, filled row by row."""

    def __init__(self, period: Period, prices: list[Any], users: dict[bytes, str | None]):
        self.period, self.prices, self.users = period, prices, users
        self.totals = {g: {"events": 0, **{m: 0 for m in GROUP_METRICS[g]}} for g in GROUPS}
        self.metrics: dict[str, int] = {}
        self.cost = 0
        self.by_agent: dict[bytes, list[int]] = {}
        self.by_member: dict[str | None, list[int]] = {}
        self.by_op: dict[str, list[int]] = {}
        n = (period.end_ms - period.start_ms + period.bucket_ms - 1) // period.bucket_ms
        self.series = [{"start_ms": period.start_ms + i * period.bucket_ms, **{g: 0 for g in GROUPS}, "cost_mT": 0}
                       for i in range(n)]

    def add(self, signer: bytes, kind: str, ts: int, m: tuple[int, ...], envelope: bytes | None) -> None:
        op = _op(envelope) if envelope is not None else None
        body = SimpleNamespace(**dict(zip(KINDS[kind].METRICS, m)), op=op)
        charged = {}
        for metric, by_kind in METRICS.items():
            fn = by_kind.get(kind)
            if fn is not None:
                amount = fn(body)
                if amount:
                    charged[metric] = amount
        bucket = (ts - self.period.start_ms) // self.period.bucket_ms
        cost = event_cost_milli(self.prices[bucket], kind, op, charged)
        group = KIND_GROUPS[kind]
        totals = self.totals[group]
        totals["events"] += 1
        for metric, amount in charged.items():
            self.metrics[metric] = self.metrics.get(metric, 0) + amount
            if metric in GROUP_METRICS[group]:  # not "events": counted once above
                totals[metric] += amount
        self.cost += cost
        point = self.series[bucket]
        point[group] += 1
        point["cost_mT"] += cost
        for table, key in ((self.by_agent, signer), (self.by_member, self.users.get(signer)), (self.by_op, op or kind)):
            row = table.get(key)
            if row is None:
                table[key] = [1, cost]
            else:
                row[0] += 1
                row[1] += cost


def _top(table: dict[Any, list[int]], name: str, render: Any) -> list[dict[str, Any]]:
    rows = sorted(table.items(), key=lambda kv: (-kv[1][1], -kv[1][0], str(kv[0])))
    out = [{name: render(k), "events": e, "cost_mT": c} for k, (e, c) in rows[:BREAKDOWN_ROWS_MAX]]
    rest = rows[BREAKDOWN_ROWS_MAX:]
    if rest:
        out.append({name: "others", "events": sum(v[0] for _k, v in rest), "cost_mT": sum(v[1] for _k, v in rest)})
    return out


class Reports:
    def __init__(self, db: Database, book: BudgetBook):
        self._db = db
        self._book = book

    # -- snapshot on the writer thread ------------------------------------------------------

    def _snapshot(self, conn: Connection, scope: str, scope_id: str, periods: list[Period], at_ms: int) -> dict[str, Any]:
        book = self._book
        field = {"user": 0, "team": 1, "platform": 2}.get(scope)
        users: dict[bytes, str | None] = {}
        agents: list[bytes] | None
        if scope == "node":
            if scope_id != "all":
                raise NotFound("scope_not_found", "the node scope has one id: all")
            agents = None  # every signer, listed on the reader
            users = {a: r.user for a, r in book.registrations.items()}
        elif scope == "agent":
            agent = _agent(scope_id)
            reg = book.registrations.get(agent)
            if reg is None and not report_store.has_entries(conn, agent):
                raise NotFound("scope_not_found", f"this node knows no agent {scope_id}")
            agents, users = [agent], {agent: reg.user if reg else None}
        else:
            agents = []
            for a, r in book.registrations.items():
                if (r.user, r.team, r.platform)[field] == scope_id:  # type: ignore[index]
                    agents.append(a)
                    users[a] = r.user
            if not agents and (scope, scope_id) not in book.plans:
                raise NotFound("scope_not_found", f"no agent is registered under {scope} {scope_id[:64]!r}")
        prices = [[book.governance.policy_at(p.start_ms + i * p.bucket_ms).prices
                   for i in range(-(-(p.end_ms - p.start_ms) // p.bucket_ms))] for p in periods]
        budgets = [] if scope == "node" else book.budget_views(conn, [(scope, scope_id)], at_ms)
        return {"agents": agents, "users": users, "prices": prices, "budgets": budgets,
                "suspended": {a.hex() for a in book.suspended_agents(at_ms)}}

    # -- the report ----------------------------------------------------------------------------

    async def report(self, scope: str, scope_id: str, period_kind: str, at_ms: int) -> dict[str, Any]:
        """The report of one scope over the period of this kind holding at_ms; raises NotFound, Invalid."""
        if scope not in SCOPES:
            raise NotFound("unknown_scope", f"scope must be one of {', '.join(SCOPES)}")
        period = period_of(period_kind, at_ms)
        before = previous(period)
        snap = await self._db.write(self._snapshot, scope, scope_id, [period, before], min(at_ms, period.end_ms - 1))
        return await self._db.read(self._read, scope, scope_id, period, before, snap)

    def _read(self, conn: Connection, scope: str, scope_id: str, period: Period, before: Period,
              snap: dict[str, Any]) -> dict[str, Any]:
        agents = snap["agents"] if snap["agents"] is not None else report_store.signers(conn)
        folds = []
        for p, prices in ((period, snap["prices"][0]), (before, snap["prices"][1])):
            fold = _Fold(p, prices, snap["users"])
            for signer, kind, ts, m0, m1, m2, m3, envelope in report_store.metering_rows(conn, agents, p.start_ms, p.end_ms):
                fold.add(signer, kind, ts, (m0, m1, m2, m3), envelope)
            folds.append(fold)
        now, prev = folds
        hexes = None if snap["agents"] is None else [a.hex() for a in agents]
        anomalies = [
            {"agent": agent, "metric": metric, "ts": d.get("ts", ts), "value": d.get("value"),
             "expected": d.get("expected"), "score": d.get("score")}
            for ts, _type, agent, metric, d in report_store.agent_alerts(
                conn, hexes, ("anomaly",), period.start_ms, period.end_ms, ANOMALIES_MAX)
        ]
        unused = [b for b in snap["budgets"] if b["allocated"] and not now.metrics.get(b["metric"])]
        events_now = sum(t["events"] for t in now.totals.values())
        events_before = sum(t["events"] for t in prev.totals.values())
        return {
            "scope": scope,
            "id": scope_id,
            "period": period.to_json(),
            "totals": now.totals,
            "cost_mT": now.cost,
            "cost_T": format_t(now.cost),
            # a suspended agent spends nothing: it is flagged, so that it never reads as the cheapest
            "by_agent": [{**row, "suspended": True} if row["agent"] in snap["suspended"] else row
                         for row in _top(now.by_agent, "agent", bytes.hex)],
            "by_member": _top(now.by_member, "user", lambda u: u),
            "by_operation": _top(now.by_op, "op", lambda o: o),
            "series": {"bucket_ms": period.bucket_ms, "points": now.series},
            "previous": {"period": before.to_json(), "cost_mT": prev.cost, "totals": prev.totals},
            "trend": {
                "cost_pct": pct_change(now.cost, prev.cost),
                "events_pct": pct_change(events_now, events_before),
                **{f"{g}_events_pct": pct_change(now.totals[g]["events"], prev.totals[g]["events"]) for g in GROUPS},
            },
            "budgets": snap["budgets"],
            "anomalies": anomalies,
            "recommendations": recommendations(
                soft_days=self._soft_days(conn, hexes, period), unused=unused, cost_mT=now.cost,
                previous_cost_mT=prev.cost, anomalies=anomalies),
        }

    def _soft_days(self, conn: Connection, agents: list[str] | None, period: Period) -> dict[str, tuple[int, int]]:
        """agent -> (UTC days with a soft or hard limit alert, days looked at) over the period (a week for a day)."""
        start = period.start_ms if period.kind != "day" else period.end_ms - SOFT_DAYS_LOOKBACK * DAY_MS
        days = (period.end_ms - start) // DAY_MS
        hits: dict[str, set[int]] = {}
        for ts, _type, agent, _metric, _d in report_store.agent_alerts(
                conn, agents, ("soft_limit", "hard_limit"), start, period.end_ms, 10_000):
            hits.setdefault(agent, set()).add(ts // DAY_MS)
        return {a: (len(d), days) for a, d in hits.items()}

    # -- /metrics -------------------------------------------------------------------------------

    async def budget_samples(self, now_ms: int, scopes_max: int) -> list[dict[str, Any]]:
        """Budget views of at most scopes_max scopes with usage in their current window (ancestors first)."""
        return await self._db.write(self._budget_samples, now_ms, scopes_max)

    def _budget_samples(self, conn: Connection, now_ms: int, scopes_max: int) -> list[dict[str, Any]]:
        book = self._book
        active = {(s, i) for (s, i, _m, window, start) in list(book.counters) if window_bounds(window, now_ms)[0] == start}
        active |= set(book.plans)
        rank = {"platform": 0, "team": 1, "user": 2, "agent": 3}
        chosen = sorted(active, key=lambda k: (rank.get(k[0], 4), k[1]))[:scopes_max]
        return [v for v in book.budget_views(conn, chosen, now_ms) if v["allocated"] is not None]


def _agent(value: str) -> bytes:
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise Invalid("bad_parameter", "an agent id is 64 lowercase hex digits")
    return bytes.fromhex(value)
