"""The PostgreSQL sink: events, log positions and signed checkpoints, exactly once.

Each delivery is one transaction: lock the origin's row in `ats_export_positions`,
check it still says `start` (another exporter of the same origin, e.g. a fleet
collector, may have moved it: then adopt its position and send nothing), insert the
events (`ON CONFLICT (event_id) DO NOTHING`: an event that reached two origin logs
is one row), their places in the log and the checkpoints, move the position to
`end`, COMMIT. A crash or a dropped connection before COMMIT leaves nothing; after
it, everything. So the position lives in PostgreSQL itself: it can only ever
describe rows that are there.

Client: asyncpg (native asyncio, binary protocol). A batch goes as one statement per
table over `unnest()` of typed arrays, one round trip each, whatever the batch size.
"""

from __future__ import annotations

import json
from typing import Any

import asyncpg

from node.export.records import COSTED_KINDS, Record
from node.store.exports import CheckpointRow

CONNECT_TIMEOUT_S = 5
COMMAND_TIMEOUT_S = 30
SCHEMA_LOCK = 0x61747301  # pg_advisory_xact_lock key: one exporter creates the schema at a time
SCHEMA_VERSION = 1

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS ats_schema (version integer NOT NULL);
CREATE TABLE IF NOT EXISTS ats_events (
    event_id    bytea PRIMARY KEY,
    kind        text NOT NULL,
    agent       text NOT NULL,
    user_key    text,
    team        text,
    platform    text,
    ts          timestamptz NOT NULL,
    ts_ms       bigint NOT NULL,
    op          text,
    model       text,
    cost_mt     bigint NOT NULL,
    metrics     jsonb NOT NULL,
    body        jsonb NOT NULL,
    envelope    bytea NOT NULL,
    origin      bytea NOT NULL,
    idx         bigint NOT NULL,
    accepted_ms bigint NOT NULL,
    exported_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX IF NOT EXISTS ats_events_ts ON ats_events (ts);
CREATE INDEX IF NOT EXISTS ats_events_agent_ts ON ats_events (agent, ts);
CREATE INDEX IF NOT EXISTS ats_events_team_ts ON ats_events (team, ts);
CREATE TABLE IF NOT EXISTS ats_log_entries (
    origin   bytea NOT NULL,
    idx      bigint NOT NULL,
    event_id bytea NOT NULL,
    PRIMARY KEY (origin, idx)
);
CREATE INDEX IF NOT EXISTS ats_log_entries_event ON ats_log_entries (event_id);
CREATE TABLE IF NOT EXISTS ats_checkpoints (
    origin     bytea NOT NULL,
    size       bigint NOT NULL,
    root       bytea NOT NULL,
    note       text NOT NULL,
    created_ms bigint NOT NULL,
    PRIMARY KEY (origin, size)
);
CREATE TABLE IF NOT EXISTS ats_export_positions (
    origin     bytea PRIMARY KEY,
    next_index bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE OR REPLACE VIEW ats_billable AS
    SELECT event_id, ts, kind, agent, user_key, team, platform, op, model, cost_mt,
           (cost_mt / 1000.0)::numeric(20, 3) AS cost_t, (metrics ->> 'units')::bigint AS units
    FROM ats_events WHERE kind IN ({", ".join(f"'{k}'" for k in COSTED_KINDS)});
CREATE OR REPLACE VIEW ats_billing_day AS
    SELECT (ts AT TIME ZONE 'UTC')::date AS day, team, user_key, agent, model,
           count(*) AS events, sum(cost_mt)::bigint AS cost_mt, sum(cost_t) AS cost_t, sum(units)::bigint AS units
    FROM ats_billable GROUP BY 1, 2, 3, 4, 5;
CREATE OR REPLACE VIEW ats_billing_month AS
    SELECT date_trunc('month', ts AT TIME ZONE 'UTC')::date AS month, team, user_key, agent, model,
           count(*) AS events, sum(cost_mt)::bigint AS cost_mt, sum(cost_t) AS cost_t, sum(units)::bigint AS units
    FROM ats_billable GROUP BY 1, 2, 3, 4, 5;
CREATE OR REPLACE VIEW ats_cost_team_day AS
    SELECT day, team, sum(events)::bigint AS events, sum(cost_t) AS cost_t FROM ats_billing_day GROUP BY 1, 2;
CREATE OR REPLACE VIEW ats_cost_team_month AS
    SELECT month, team, sum(events)::bigint AS events, sum(cost_t) AS cost_t FROM ats_billing_month GROUP BY 1, 2;
"""

INSERT_EVENTS = """
INSERT INTO ats_events (event_id, kind, agent, user_key, team, platform, ts, ts_ms, op, model, cost_mt, metrics, body,
                        envelope, origin, idx, accepted_ms)
SELECT e, k, a, u, t, p, to_timestamp(ts / 1000.0), ts, op, m, c, mt::jsonb, b::jsonb, env, $1, i, acc
FROM unnest($2::bytea[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::bigint[], $9::text[],
            $10::text[], $11::bigint[], $12::text[], $13::text[], $14::bytea[], $15::bigint[], $16::bigint[])
     AS x(e, k, a, u, t, p, ts, op, m, c, mt, b, env, i, acc)
ON CONFLICT (event_id) DO NOTHING
"""
INSERT_PLACES = """
INSERT INTO ats_log_entries (origin, idx, event_id)
SELECT $1, i, e FROM unnest($2::bigint[], $3::bytea[]) AS x(i, e) ON CONFLICT DO NOTHING
"""
INSERT_CHECKPOINTS = """
INSERT INTO ats_checkpoints (origin, size, root, note, created_ms)
SELECT $1, s, r, n, c FROM unnest($2::bigint[], $3::bytea[], $4::text[], $5::bigint[]) AS x(s, r, n, c)
ON CONFLICT DO NOTHING
"""


def _columns(records: list[Record]) -> list[list[Any]]:
    """The per-column arrays of INSERT_EVENTS ($2..$16)."""
    dumps = json.dumps
    return [
        [r.event_id for r in records], [r.kind for r in records], [r.agent.hex() for r in records],
        [r.user for r in records], [r.team for r in records], [r.platform for r in records],
        [r.ts_ms for r in records], [r.op for r in records], [r.model for r in records],
        [r.cost_mt for r in records], [dumps(r.metrics, separators=(",", ":")) for r in records],
        [dumps(r.body, separators=(",", ":")) for r in records], [r.envelope for r in records],
        [r.index for r in records], [r.accepted_ms for r in records],
    ]


class PostgresSink:
    name = "postgres"
    dedupes_ids = True  # event_id is the primary key

    def __init__(self, url: str):
        self._url = url
        self._conn: asyncpg.Connection | None = None

    async def open(self) -> None:
        self._conn = await asyncpg.connect(self._url, timeout=CONNECT_TIMEOUT_S, command_timeout=COMMAND_TIMEOUT_S)
        async with self._conn.transaction():
            await self._conn.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            await self._conn.execute(SCHEMA)
            if await self._conn.fetchval("SELECT count(*) FROM ats_schema") == 0:
                await self._conn.execute("INSERT INTO ats_schema (version) VALUES ($1)", SCHEMA_VERSION)

    async def position(self, origin: bytes) -> int:
        assert self._conn is not None
        value = await self._conn.fetchval("SELECT next_index FROM ats_export_positions WHERE origin = $1", origin)
        return int(value or 0)

    def prepare(self, records: list[Record]) -> tuple[list[list[Any]], list[int], list[bytes]]:
        """The column arrays of the events, and the (index, event id) of their places in the log."""
        return _columns(records), [r.index for r in records], [r.event_id for r in records]

    async def deliver(self, origin: bytes, start: int, end: int,
                      prepared: tuple[list[list[Any]], list[int], list[bytes]], checkpoints: list[CheckpointRow]) -> int:
        conn = self._conn
        assert conn is not None
        async with conn.transaction():
            await conn.execute("INSERT INTO ats_export_positions (origin, next_index) VALUES ($1, 0)"
                               " ON CONFLICT DO NOTHING", origin)
            current = await conn.fetchval(
                "SELECT next_index FROM ats_export_positions WHERE origin = $1 FOR UPDATE", origin)
            if current != start:
                return int(current)  # another exporter moved it (or the database was restored): follow it
            columns, indexes, ids = prepared
            if ids:
                await conn.execute(INSERT_EVENTS, origin, *columns)
                await conn.execute(INSERT_PLACES, origin, indexes, ids)
            if checkpoints:
                await conn.execute(INSERT_CHECKPOINTS, origin, [c.size for c in checkpoints],
                                   [bytes(c.root) for c in checkpoints], [c.note for c in checkpoints],
                                   [c.created_ms for c in checkpoints])
            await conn.execute("UPDATE ats_export_positions SET next_index = $2, updated_at = clock_timestamp()"
                               " WHERE origin = $1", origin, end)
        return end

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                await conn.close(timeout=2)
            except Exception:
                conn.terminate()
