"""`ats budget set|get|list|rm`: owner budgets per scope (ledger/scoped.py), signed with an authority's key.

    ats budget set team ops --metric cost --limit 200T --window month --key authority.key
    ats budget get team ops
    ats budget list
    ats budget rm team ops --metric cost --window month --key authority.key

Exit codes (node/cli.py): 0 ok; 1 the node refused; 2 usage; 3 the node could not be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import re
from datetime import datetime, timezone
from typing import Any

from ledger.constants import COUNTER_MAX
from ledger.scoped import METRIC_ALIASES, SCOPES, metric_name
from node.cliexit import EXIT_OK
from node.clicmds import UsageError
from node.clicmds import _run as _run_command
from node.sdk import AgentClient
from node.cliident import human_time
from node.sdk.agent import HttpTransport

_SUFFIX = {"": 1, "k": 1_000, "m": 1_000_000, "g": 1_000_000_000, "t": 1_000_000_000_000}
_AMOUNT_RE = re.compile(r"(\d+(?:\.\d+)?)\s*([a-z]*)")


def parse_limit(metric: str, text: str) -> int:
    """A limit in the metric's counted unit. Cost: `200T` or `200` is 200 T (200000 milli-T), `1500mT`
    is 1.5 T. Other metrics: an integer with an optional k, M, G suffix (`2M` tokens, `10G` bytes)."""
    m = _AMOUNT_RE.fullmatch(text.strip().lower())
    if m is None:
        raise UsageError(f"--limit {text!r}: expected a number such as 200T, 1500mT, 2M or 10000")
    number, suffix = m.groups()
    if metric_name(metric) == "act.cost":
        scale = {"t": 1000, "": 1000, "mt": 1}.get(suffix)
        if scale is None:
            raise UsageError(f"--limit {text!r}: a cost is in T (200T) or milli-T (1500mT)")
    else:
        scale = _SUFFIX.get(suffix.rstrip("b") if metric_name(metric) == "dat.bytes" else suffix)
        if scale is None:
            raise UsageError(f"--limit {text!r}: unknown suffix {suffix!r} (k, M, G)")
    whole, _, frac = number.partition(".")
    value = int(whole) * scale + (int(frac) * scale // 10 ** len(frac) if frac else 0)
    if value > COUNTER_MAX:
        raise UsageError(f"--limit {text!r} is too large")
    return value


def parse_time(text: str | None) -> int | None:
    """--from: ms since the epoch, or an ISO 8601 time (UTC if it names no offset)."""
    if text is None:
        return None
    if text.isdigit():
        return int(text)
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"--from {text!r}: expected ms since the epoch or an ISO 8601 time") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return int(when.timestamp() * 1000)


def human_amount(metric: str, value: int | None) -> str:
    if value is None:
        return "unlimited"
    if metric == "act.cost":
        return f"{value / 1000:g} T"
    return f"{value:,}"


def _body(args: argparse.Namespace, remove: bool) -> dict[str, Any]:
    try:
        metric_name(args.metric)
    except Exception:
        raise UsageError(f"--metric {args.metric!r}: one of {', '.join(METRIC_ALIASES)}") from None
    body: dict[str, Any] = {"scope": args.scope, "id": args.id, "metric": args.metric, "window": args.window}
    if args.tz and args.tz != "UTC":
        body["tz"] = args.tz
    effective = parse_time(args.effective)
    if effective is not None:
        body["effective"] = effective
    if remove:
        return body
    body["limit"] = parse_limit(args.metric, args.limit)
    for name in ("soft_pct", "hard_pct", "reserve_pct"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.throttle:
        body["throttle"] = True
    if args.suspend:
        body["suspend"] = True
    return body


def run(args: argparse.Namespace) -> int:
    return _run_command(_run, args)  # UsageError: exit 2; refused: 1 (with Retry-After); unreachable: 3


async def _run(args: argparse.Namespace) -> int:
    if args.scope in ("agent", "user") and args.id is not None:
        from node.cliident import resolve

        http = _reader(args.url)
        try:
            args.id = await resolve(http, args.id)  # a name, a hex key or a key file
        finally:
            await http.close()
    if args.action in ("set", "rm"):
        return await _record(args)
    params = {name: value for name, value in (("scope", args.scope), ("id", args.id)) if value}
    http = _reader(args.url)
    try:
        doc = await http.json("GET", "/v1/budgets", params=params)
    finally:
        await http.close()
    if args.json:
        print(json.dumps(doc, indent=2))
        return EXIT_OK
    if not doc["budgets"]:
        print("no owner budgets" + (f" for {args.scope} {args.id}" if args.id else ""))
    for item in doc["budgets"]:
        _print_budget(item)
    return EXIT_OK


def _reader(url: str) -> HttpTransport:
    """A client for reads, with the read token of $ATS_TOKEN if set."""
    http = HttpTransport(url, timeout_s=10, retries=2, backoff_ms=100)
    http.read_token = os.environ.get("ATS_TOKEN") or None
    return http


async def _record(args: argparse.Namespace) -> int:
    """`ats budget set` and `ats budget rm`: sign and submit the record with --key."""
    from node.keys import KeyFileError, read_key

    if not args.key:
        raise UsageError(f"budget {args.action} needs --key (an authority's or the team admin's key file)")
    try:
        seed = read_key(args.key)
    except KeyFileError as e:
        raise UsageError(str(e)) from None
    kind = "budget.set" if args.action == "set" else "budget.rm"
    body = _body(args, args.action == "rm")
    async with AgentClient(args.url, seed) as client:
        receipt = await client.submit(kind, body)
    if args.json:
        print(json.dumps(receipt, indent=2))
    else:
        print(f"{kind} {args.scope} {args.id} {args.metric} per {args.window}: recorded as {receipt.get('id')}")
    return EXIT_OK


def _print_budget(item: dict[str, Any]) -> None:
    """One owner budget of GET /v1/budgets, as lines for a person."""
    current, metric = item["in_force"], item["metric"]
    head = f"{item['scope']} {item['id']}  {metric} per {item['window']}"
    if current is not None:
        print(f"{head}: {human_amount(metric, item['consumed'])} used of {human_amount(metric, current['limit'])}"
              f" (held {human_amount(metric, item['held'])}, soft {current['soft_pct']} %, hard {current['hard_pct']} %,"
              f" reserve {current['reserve_pct']} %{', throttle' if current['throttle'] else ''}"
              f"{', suspend' if current['suspend'] else ''}); window ends {human_time(item['window_end'])}")
    else:
        print(f"{head}: none in force")
    for change in item["scheduled"]:
        what = "removed" if change["limit"] is None else f"limit {human_amount(metric, change['limit'])}"
        print(f"    from {human_time(change['effective'])}: {what}")


def add_parser(sub: "argparse._SubParsersAction[argparse.ArgumentParser]", default_url: str) -> None:
    s = sub.add_parser("budget", help="set, get, list or remove an owner budget of an agent, user, team or platform")
    s.add_argument("action", choices=["set", "get", "list", "rm"])
    s.add_argument("scope", nargs="?", choices=list(SCOPES), help="agent, user, team or platform")
    s.add_argument("id", nargs="?", help="the scope: an agent's or user's name, key (hex) or key file; a team or platform name")
    s.add_argument("--metric", default="cost", help=f"one of {', '.join(METRIC_ALIASES)} (default: cost, in T)")
    s.add_argument("--limit", help="200T (cost), 2M (tokens), 10G (bytes), 500 (runs, events, ...)")
    s.add_argument("--window", default="month", choices=["hour", "day", "week", "month"], help="default: month")
    s.add_argument("--tz", default="UTC", help="IANA time zone of a day, week or month window (default: UTC)")
    s.add_argument("--soft", dest="soft_pct", type=int, help="warn from this %% of the limit (default 80)")
    s.add_argument("--hard", dest="hard_pct", type=int, help="refuse above this %% of the limit (default 100)")
    s.add_argument("--reserve", dest="reserve_pct", type=int, help="emergency reserve above hard, %% (default 0)")
    s.add_argument("--throttle", action="store_true", help="pace spending past the soft limit")
    s.add_argument("--suspend", action="store_true", help="suspend an agent that runs past hard + reserve")
    s.add_argument("--from", dest="effective", help="takes effect at this time (ISO 8601 or ms; default: now)")
    s.add_argument("--key", help="signing key file: an authority's, or a team admin's for its own team (set, rm)")
    s.add_argument("--json", action="store_true", help="print raw JSON")
    s.add_argument("--url", default=default_url, help="node URL")


def validate(args: argparse.Namespace) -> str | None:
    """A usage problem argparse cannot see, or None."""
    if args.action in ("set", "get", "rm") and (args.scope is None or args.id is None):
        return f"budget {args.action} needs a scope and an id, e.g. `team ops`"
    if args.action == "set" and args.limit is None:
        return "budget set needs --limit"
    return None
