"""What the exporter tests compare: the node's own log (its SQLite file) against the sinks."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from typing import Any, Callable

import asyncpg

from tests.agentkit import TestAgent
from tests.export.servers import stream_messages
from tests.integration.http import get, request


def cbor_array(items: list[bytes]) -> bytes:
    n = len(items)
    head = bytes([0x80 + n]) if n < 24 else (b"\x98" + bytes([n]) if n < 256 else b"\x99" + n.to_bytes(2, "big"))
    return head + b"".join(items)


def submit(url: str, envelopes: list[bytes]) -> int:
    reply = request(url, "POST", "/v1/events/batch", cbor_array(envelopes), "application/cbor")
    assert reply.status == 200, reply.body[:300]
    return reply.json()["accepted"]


def acts(agent: TestAgent, n: int, cost: int = 1500) -> list[bytes]:
    return [agent.envelope("act", {"op": "llm.call", "cost": cost + i, "units": 10 + i}) for i in range(n)]


def ledger_entries(data_dir: str) -> list[tuple[bytes, int, bytes, str, bytes]]:
    """(origin key, index, event id, kind, envelope) of every entry of every log, read from the SQLite file."""
    conn = sqlite3.connect(f"file:{data_dir}/ledger.sqlite?mode=ro", uri=True)
    try:
        return [(bytes(o), i, bytes(e), k, bytes(env)) for o, i, e, k, env in conn.execute(
            "SELECT o.public_key, e.idx, e.event_id, e.kind, e.envelope FROM entries e JOIN origins o ON o.id = e.origin"
            " ORDER BY o.id, e.idx")]
    finally:
        conn.close()


def own_entries(data_dir: str, origin_hex: str) -> list[tuple[bytes, int, bytes, str, bytes]]:
    return [e for e in ledger_entries(data_dir) if e[0].hex() == origin_hex]


def pg_rows(url: str, sql: str, *args: Any) -> list[Any]:
    async def run() -> list[Any]:
        conn = await asyncpg.connect(url)
        try:
            return [tuple(r) for r in await conn.fetch(sql, *args)]
        finally:
            await conn.close()

    return asyncio.run(run())


def messages(url: str, stream: str = "ATS") -> list[dict[str, Any]]:
    return asyncio.run(stream_messages(url, stream))


def export_views(node_url: str) -> dict[str, dict[str, Any]]:
    return {v["sink"]: v for v in get(node_url, "/v1/dashboard/exports").json()["exporters"]}


def wait_for(what: str, cond: Callable[[], bool], timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def caught_up(node_url: str, sinks: tuple[str, ...]) -> bool:
    views = export_views(node_url)
    return all(views[s]["backlog_events"] == 0 and views[s]["up"] for s in sinks)


def summary(msg: dict[str, Any]) -> dict[str, Any]:
    return json.loads(msg["headers"]["Ats-Summary"])
