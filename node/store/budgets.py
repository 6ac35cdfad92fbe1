"""Budget state in SQLite: usage counters, alerts, and the records the budget book replays."""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable

from ledger.constants import COUNTER_MAX
from ledger.events import Event, UnknownBody, parse_envelope


def policy_events(conn: sqlite3.Connection, runs_since_ms: int) -> Iterable[Event]:
    """Policy records (all) and run records (since runs_since_ms), in log order (origin, index)."""
    rows = conn.execute(
        # INDEXED BY: the partial index both filters and orders; a full scan at 1M entries is seconds.
        # Its kinds are the usage kinds as they were when schema 2 created the index (node/store/schema.py).
        "SELECT envelope, kind, ts FROM entries INDEXED BY entries_policy WHERE kind NOT IN ('act', 'dat', 'cpt', 'trt')"
        " ORDER BY origin, idx"
    ).fetchall()
    for envelope, kind, ts in rows:
        if kind.startswith("run.") and ts < runs_since_ms:
            continue
        event = parse_envelope(envelope, unknown_kinds=True).event
        if not isinstance(event.body, UnknownBody):  # a newer node's kind: stored, counted nowhere
            yield event


def counter(conn: sqlite3.Connection, key: tuple[str, str, str, str, int]) -> int:
    row = conn.execute(
        "SELECT amount FROM usage_counters WHERE scope = ? AND scope_id = ? AND metric = ? AND window = ? AND start_ms = ?",
        key,
    ).fetchone()
    return row[0] if row else 0


COUNTERS_PER_QUERY = 100  # keys per SELECT of `counters` (SQLite binds at most 32,766 variables)


def counters(conn: sqlite3.Connection, keys: list[tuple[str, str, str, str, int]]) -> dict[tuple[str, str, str, str, int], int]:
    """The counters of these keys, 0 for those SQLite does not hold: one indexed query per 100 keys."""
    out = dict.fromkeys(keys, 0)
    for i in range(0, len(keys), COUNTERS_PER_QUERY):
        part = keys[i : i + COUNTERS_PER_QUERY]
        # CROSS JOIN keeps the keys outer, so each is one primary-key search (a row-value IN scans the table)
        rows = conn.execute(
            "WITH k(a, b, c, d, e) AS (VALUES " + ", ".join(["(?, ?, ?, ?, ?)"] * len(part)) + ")"
            " SELECT u.scope, u.scope_id, u.metric, u.window, u.start_ms, u.amount FROM k CROSS JOIN usage_counters u"
            " ON u.scope = k.a AND u.scope_id = k.b AND u.metric = k.c AND u.window = k.d AND u.start_ms = k.e",
            [v for key in part for v in key],
        ).fetchall()
        for scope, scope_id, metric, window, start, amount in rows:
            out[(scope, scope_id, metric, window, start)] = amount
    return out


def add_counters(conn: sqlite3.Connection, deltas: dict[tuple[str, str, str, str, int], int]) -> None:
    """Add deltas to counters (inside the caller's transaction), saturating at ±COUNTER_MAX.

    Admission keeps every counter at most COUNTER_MAX (node/budgets.py), so the
    sum of two never leaves int64; the cap is the second check (P4).
    """
    conn.executemany(
        "INSERT INTO usage_counters (scope, scope_id, metric, window, start_ms, amount) VALUES (?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (scope, scope_id, metric, window, start_ms)"
        " DO UPDATE SET amount = max(min(amount + excluded.amount, ?), ?)",
        [key + (max(-COUNTER_MAX, min(amount, COUNTER_MAX)), COUNTER_MAX, -COUNTER_MAX)
         for key, amount in deltas.items() if amount],
    )


def insert_alerts(conn: sqlite3.Connection, alerts: list[dict[str, Any]]) -> list[int]:
    ids = []
    for a in alerts:
        cur = conn.execute(
            "INSERT INTO alerts (ts_ms, type, scope, scope_id, metric, detail) VALUES (?, ?, ?, ?, ?, ?)",
            (a["ts_ms"], a["type"], a["scope"], a["scope_id"], a["metric"], a["detail"]),
        )
        ids.append(cur.lastrowid)
    return ids


def recent_alerts(conn: sqlite3.Connection, scopes: list[tuple[str, str]], limit: int) -> list[dict[str, Any]]:
    out = []
    for scope, scope_id in scopes:
        rows = conn.execute(
            "SELECT id, ts_ms, type, metric, detail, delivered FROM alerts WHERE scope = ? AND scope_id = ?"
            " ORDER BY ts_ms DESC, id DESC LIMIT ?",
            (scope, scope_id, limit),
        ).fetchall()
        for id_, ts, type_, metric, detail, delivered in rows:
            out.append({"id": id_, "ts": ts, "type": type_, "scope": scope, "scope_id": scope_id, "metric": metric,
                        "detail": json.loads(detail), "delivered": bool(delivered)})
    out.sort(key=lambda a: (-a["ts"], -a["id"]))
    return out[:limit]


def mark_delivered(conn: sqlite3.Connection, alert_id: int) -> None:
    conn.execute("UPDATE alerts SET delivered = 1 WHERE id = ?", (alert_id,))


def ratings_about(conn: sqlite3.Connection, subject: bytes, before_ms: int) -> list[tuple[int, bytes, int, int, str]]:
    """(ts, issuer, value, halflife, type) of TRT events about subject with ts < before_ms, each id once."""
    rows = conn.execute(
        "SELECT ts, signer, envelope FROM entries WHERE subject = ? AND kind = 'trt' AND ts < ? GROUP BY event_id",
        (subject, before_ms),
    ).fetchall()
    out = []
    for ts, signer, envelope in rows:
        body = parse_envelope(envelope).event.body
        out.append((ts, signer, body.value, body.halflife, body.type))
    return out


def mark_delivered_tx(conn: sqlite3.Connection, alert_id: int) -> None:
    """Mark an alert delivered, in its own transaction."""
    from node.store.sqlite import transaction

    with transaction(conn):
        mark_delivered(conn, alert_id)
