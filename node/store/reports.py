"""The rows usage reports fold: a period's metering events of some signers, and their alerts.

Reads use the `entries_signer_ts` index (signer, ts): a report costs one index
range per signer plus the events it covers, never a scan of the whole log.
Each event id counts once, whichever origin logs hold it.
"""

from __future__ import annotations

import json
import sqlite3
from typing import Any, Iterable, Iterator

from ledger.kinds import KIND_GROUPS

SIGNERS_PER_QUERY = 500  # bound on an IN list (SQLite's default variable limit is 32766)
# the kinds reports fold: those with a usage group (ledger.kinds), as an SQL list of literals
_METERING = "(" + ", ".join(f"'{kind}'" for kind in KIND_GROUPS) + ")"


def signers(conn: sqlite3.Connection) -> list[bytes]:
    """Every distinct signer of an entry, by stepping through the (signer, ts) index: O(signers × log n)."""
    out: list[bytes] = []
    last = b""
    while True:
        row = conn.execute("SELECT signer FROM entries WHERE signer > ? ORDER BY signer LIMIT 1", (last,)).fetchone()
        if row is None:
            return out
        last = row[0]
        out.append(last)


def has_entries(conn: sqlite3.Connection, signer: bytes) -> bool:
    """Whether an agent signed an entry, or a metered event names it."""
    if conn.execute("SELECT 1 FROM entries WHERE signer = ? LIMIT 1", (signer,)).fetchone() is not None:
        return True
    return conn.execute("SELECT 1 FROM entries WHERE subject = ? AND kind IN ('act', 'dat', 'cpt') LIMIT 1",
                        (signer,)).fetchone() is not None


# The agent an event charges: a metered event's body.agent (the subject column), else its signer.
_CHARGED = "CASE WHEN kind IN ('act', 'dat', 'cpt') AND subject IS NOT NULL THEN subject ELSE signer END"


def metering_rows(conn: sqlite3.Connection, agents: list[bytes], start_ms: int, end_ms: int
                  ) -> Iterator[tuple[bytes, str, int, int, int, int, int, bytes | None]]:
    """(agent charged, kind, ts, m0, m1, m2, m3, envelope of an act event else None) with start <= ts < end:
    the events these agents signed and the metered events that name them (PROTOCOL.md §6)."""
    cols = f"{_CHARGED} AS agent, event_id, kind, ts, m0, m1, m2, m3, CASE WHEN kind = 'act' THEN envelope END AS env"
    for i in range(0, len(agents), SIGNERS_PER_QUERY):
        chunk = agents[i : i + SIGNERS_PER_QUERY]
        marks = ",".join("?" * len(chunk))
        yield from conn.execute(
            f"SELECT agent, kind, ts, m0, m1, m2, m3, env FROM ("
            f" SELECT {cols} FROM entries WHERE signer IN ({marks}) AND ts >= ? AND ts < ? AND kind IN {_METERING}"
            f" UNION ALL SELECT {cols} FROM entries WHERE subject IN ({marks}) AND kind IN ('act', 'dat', 'cpt')"
            " AND ts >= ? AND ts < ?) GROUP BY event_id",
            (*chunk, start_ms, end_ms, *chunk, start_ms, end_ms),
        )


def agent_alerts(conn: sqlite3.Connection, agents: Iterable[str] | None, types: tuple[str, ...], start_ms: int,
                 end_ms: int, limit: int) -> list[tuple[int, str, str, str, dict[str, Any]]]:
    """(ts_ms, type, agent hex, metric, detail) of agent-scope alerts of these types, newest first.

    agents None: every agent (the alerts table is small next to the log).
    """
    types_sql = ",".join("?" * len(types))
    rows: list[tuple] = []
    if agents is None:
        rows = conn.execute(
            f"SELECT ts_ms, type, scope_id, metric, detail FROM alerts WHERE scope = 'agent' AND type IN ({types_sql})"
            " AND ts_ms >= ? AND ts_ms < ? ORDER BY ts_ms DESC, id DESC LIMIT ?", (*types, start_ms, end_ms, limit),
        ).fetchall()
    else:
        for agent in agents:
            rows += conn.execute(
                f"SELECT ts_ms, type, scope_id, metric, detail FROM alerts WHERE scope = 'agent' AND scope_id = ?"
                f" AND ts_ms >= ? AND ts_ms < ? AND type IN ({types_sql}) ORDER BY ts_ms DESC LIMIT ?",
                (agent, start_ms, end_ms, *types, limit),
            ).fetchall()
        rows.sort(key=lambda r: -r[0])
        rows = rows[:limit]
    return [(ts, type_, scope_id, metric, json.loads(detail)) for ts, type_, scope_id, metric, detail in rows]
