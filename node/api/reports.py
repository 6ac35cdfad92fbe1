"""GET /v1/reports/{scope}/{id}: a usage report as JSON, or as CSV for spreadsheets (docs/reports.md)."""

from __future__ import annotations

import csv
import io
from typing import Any

from aiohttp import web

from ledger.constants import TIME_MS_MAX
from ledger.errors import Invalid
from node.api.params import int_param, str_param
from node.appkeys import CLOCK_KEY, QUERIES_KEY, REPORTS_KEY

CSV_HEADER = ("section", "key", "field", "value")


async def report(request: web.Request) -> web.Response:
    """GET /v1/reports/{scope}/{id}?period=day|week|month&at=<ms>&format=json|csv."""
    period = str_param(request, "period") or "day"
    at_ms = int_param(request, "at", request.app[CLOCK_KEY].now_ms(), maximum=TIME_MS_MAX)
    fmt = str_param(request, "format") or ("csv" if "text/csv" in request.headers.get("Accept", "") else "json")
    if fmt not in ("json", "csv"):
        raise Invalid("bad_parameter", "format must be json or csv")
    scope, scope_id = request.match_info["scope"], request.match_info["id"]
    if scope in ("agent", "user") and len(scope_id) != 64:  # a readable name (agent.register)
        scope_id = request.app[QUERIES_KEY].identity(scope_id, "id").hex()
    doc = await request.app[REPORTS_KEY].report(scope, scope_id, period, at_ms)
    if fmt == "json":
        return web.json_response(doc)
    name = f"ats-report-{doc['scope']}-{doc['id'][:16]}-{doc['period']['kind']}-{doc['period']['start_ms']}.csv"
    return web.Response(text=to_csv(doc), content_type="text/csv", charset="utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{name}"'})


def csv_rows(doc: dict[str, Any]) -> list[tuple[Any, ...]]:
    """The report as (section, key, field, value) rows: the long layout docs/reports.md describes."""
    rows: list[tuple[Any, ...]] = [
        ("report", "scope", "", doc["scope"]), ("report", "id", "", doc["id"]),
        *(("period", "", k, v) for k, v in doc["period"].items()),
        ("cost", "total", "cost_mT", doc["cost_mT"]), ("cost", "total", "cost_T", doc["cost_T"]),
    ]
    for section, src in (("totals", doc["totals"]), ("previous_totals", doc["previous"]["totals"])):
        rows += [(section, kind, f, v) for kind, fields in src.items() for f, v in fields.items()]
    rows.append(("previous", "total", "cost_mT", doc["previous"]["cost_mT"]))
    for section, name in (("by_agent", "agent"), ("by_member", "user"), ("by_operation", "op")):
        for row in doc[section]:
            key = "" if row[name] is None else row[name]
            rows += [(section, key, "events", row["events"]), (section, key, "cost_mT", row["cost_mT"])]
    for point in doc["series"]["points"]:
        rows += [("series", point["start_ms"], f, v) for f, v in point.items() if f != "start_ms"]
    rows += [("trend", k, "", "" if v is None else v) for k, v in doc["trend"].items()]
    for b in doc["budgets"]:
        key = f"{b['scope']}/{b['scope_id']}/{b['metric']}/{b['window']}/{b['source']}"
        rows += [("budgets", key, f, "" if b[f] is None else b[f]) for f in ("allocated", "consumed", "held", "remaining", "status")]
    for i, a in enumerate(doc["anomalies"]):
        rows += [("anomalies", i, f, a[f]) for f in ("agent", "metric", "ts", "value", "expected", "score")]
    for i, r in enumerate(doc["recommendations"]):
        rows += [("recommendations", i, f, r[f]) for f in ("code", "severity", "text")]
    return rows


def to_csv(doc: dict[str, Any]) -> str:
    out = io.StringIO()
    w = csv.writer(out, lineterminator="\r\n")  # RFC 4180 line ends
    w.writerow(CSV_HEADER)
    w.writerows(csv_rows(doc))
    return out.getvalue()
