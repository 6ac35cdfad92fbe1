"""Exporter figures against real PostgreSQL and nats-server (started and removed by this script).

    python scripts/bench_export.py [--events 50000] [--rate 500] [--seconds 20] [--outage-s 10] [--parts 1,2,3]

Prints, for each sink (PostgreSQL, JetStream):
  1. catch-up: a node holding --events events not yet exported is restarted with the exporter on;
     entries exported per second, from the sink's own clock (PostgreSQL: span of exported_at;
     JetStream: the stream's first and last message times) (target >= 10,000/s);
  2. lag at --rate events/s (both sinks on, events submitted in small batches every 10 ms): time from
     the node's accepted_ms of each event to its row's exported_at (PostgreSQL) or to its arrival at
     a core NATS subscriber of ats.events.> in this process (JetStream); p50, p99, max
     (target p99 <= 250 ms);
  3. drain after an outage: ingest at --rate while the sink is down for --outage-s seconds, then
     bring it back; the time until the exporter reconnects (its backoff, export_retry_ms_max = 500
     here), then the drain rate (backlog + events ingested meanwhile, over the time from reconnection
     until the backlog is 0) against the ingest rate (target >= 10x).
One machine, one clock; the node, the servers and this script share its cores.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiohttp  # noqa: E402
import asyncpg  # noqa: E402
import nats  # noqa: E402

from tests.agentkit import TestAgent  # noqa: E402
from tests.export.helpers import cbor_array  # noqa: E402
from tests.export.servers import NatsServer, PostgresServer, delete_stream  # noqa: E402
from tests.integration.nodeproc import NodeProcess  # noqa: E402

CBOR = {"Content-Type": "application/cbor"}
BASE = {"ATS_BUDGETS": "false", "ATS_ANOMALY_DETECTION": "false", "ATS_EXPORT_RETRY_MS_MAX": "500"}


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))] if values else float("nan")


async def fill(url: str, n: int) -> None:
    """n act events over HTTP, batches of 500 on 4 connections."""
    agent = TestAgent()
    bodies = [cbor_array([agent.envelope("act", {"op": "llm.call", "cost": 1000 + j, "units": 7})
                          for j in range(min(500, n - i))]) for i in range(0, n, 500)]
    it = iter(bodies)

    async def worker(session: aiohttp.ClientSession) -> None:
        for body in it:
            async with session.post(url + "/v1/events/batch", data=body, headers=CBOR) as r:
                assert r.status == 200, await r.text()

    async with aiohttp.ClientSession() as session:
        await asyncio.gather(*(worker(session) for _ in range(4)))


async def exports(session: aiohttp.ClientSession, url: str) -> dict[str, dict[str, Any]]:
    async with session.get(url + "/v1/dashboard/exports") as r:
        return {v["sink"]: v for v in (await r.json())["exporters"]}


async def wait_caught_up(url: str, sink: str, timeout_s: float = 300) -> float:
    """Monotonic time at which the sink's backlog was first seen 0 (polled every 20 ms)."""
    deadline = time.monotonic() + timeout_s
    async with aiohttp.ClientSession() as session:
        while time.monotonic() < deadline:
            try:
                v = (await exports(session, url))[sink]
                if v["up"] and v["backlog_events"] == 0:
                    return time.monotonic()
            except aiohttp.ClientError:
                pass
            await asyncio.sleep(0.02)
    raise TimeoutError(f"{sink} did not catch up")


async def pg_span(url: str) -> tuple[int, float, int]:
    """(rows, seconds between the first and last exported_at, bytes of the tables and their indexes)."""
    conn = await asyncpg.connect(url)
    try:
        n, span = await conn.fetchrow("SELECT count(*), extract(epoch FROM max(exported_at) - min(exported_at))"
                                      " FROM ats_events")
        size = await conn.fetchval("SELECT sum(pg_total_relation_size(t)) FROM unnest(ARRAY['ats_events',"
                                   " 'ats_log_entries', 'ats_checkpoints']::regclass[]) AS t")
        return n, float(span), int(size)
    finally:
        await conn.close()


async def nats_span(url: str, stream: str) -> tuple[int, float]:
    nc = await nats.connect(url)
    try:
        info = json.loads((await nc.request(f"$JS.API.STREAM.INFO.{stream}", b"{}", timeout=5)).data)["state"]

        def ts(text: str) -> float:  # RFC 3339 with nanoseconds
            from datetime import datetime
            base, _, frac = text.rstrip("Z").partition(".")
            return datetime.fromisoformat(base + "+00:00").timestamp() + float("0." + (frac or "0"))

        return info["messages"], ts(info["last_ts"]) - ts(info["first_ts"]), info["bytes"]
    finally:
        await nc.close()


async def catch_up(root: str, sink: str, events: int, pg: PostgresServer, nats_server: NatsServer) -> None:
    node = NodeProcess(f"{root}/catchup-{sink}", env=BASE).start()
    try:
        await fill(node.url, events)
        node.kill()
        if sink == "postgres":
            db = pg.create_db(f"catchup_{int(time.time())}")
            node.env = {**BASE, "ATS_EXPORT_POSTGRES": db}
        else:
            node.env = {**BASE, "ATS_EXPORT_NATS": nats_server.url, "ATS_EXPORT_NATS_STREAM": "CATCHUP"}
        started = time.monotonic()
        node.start()
        done = await wait_caught_up(node.url, sink)
        n, span, size = await (pg_span(db) if sink == "postgres" else nats_span(nats_server.url, "CATCHUP"))
        assert n >= events, (n, events)
        ledger = sum(os.path.getsize(os.path.join(node.data_dir, f)) for f in os.listdir(node.data_dir)
                     if f.startswith("ledger.sqlite"))
        print(f"[1] catch-up {sink:8}: {n} entries in {span:.2f} s at the sink = {n / span:,.0f} entries/s"
              f" (node start to caught up: {done - started:.2f} s, {n / (done - started):,.0f}/s);"
              f" bytes per event: {size / n:,.0f} in the sink, {ledger / n:,.0f} in the node's SQLite", flush=True)
    finally:
        node.kill()
        if sink == "nats":  # one stream at a time may hold ats.events.>
            await delete_stream(nats_server.url, "CATCHUP")


class Load:
    """Submits `rate` events/s in batches every 10 ms until stopped."""

    def __init__(self, url: str, rate: int):
        self.url, self.rate, self.sent, self.stop = url, rate, 0, False
        self.agent = TestAgent()

    async def run(self) -> None:
        per_tick = max(1, self.rate // 100)
        async with aiohttp.ClientSession() as session:
            next_t = time.monotonic()
            while not self.stop:
                body = cbor_array([self.agent.envelope("act", {"op": "llm.call", "cost": 5, "units": 1})
                                   for _ in range(per_tick)])
                async with session.post(self.url + "/v1/events/batch", data=body, headers=CBOR) as r:
                    assert r.status == 200
                self.sent += per_tick
                next_t += 0.01
                await asyncio.sleep(max(0.0, next_t - time.monotonic()))


async def lag(root: str, rate: int, seconds: float, pg: PostgresServer, nats_server: NatsServer) -> None:
    db = pg.create_db(f"lag_{int(time.time())}")
    node = NodeProcess(f"{root}/lag", env={**BASE, "ATS_EXPORT_POSTGRES": db, "ATS_EXPORT_NATS": nats_server.url,
                                           "ATS_EXPORT_NATS_STREAM": "LAG"}).start()
    nc = await nats.connect(nats_server.url)
    arrivals: list[float] = []

    async def on_msg(msg: Any) -> None:
        arrivals.append(time.time() * 1000 - json.loads(msg.headers["Ats-Summary"])["accepted_ms"])

    try:
        await nc.subscribe("ats.events.>", cb=on_msg)
        load = Load(node.url, rate)
        task = asyncio.create_task(load.run())
        await asyncio.sleep(seconds)
        load.stop = True
        await task
        await wait_caught_up(node.url, "postgres")
        await wait_caught_up(node.url, "nats")
        await asyncio.sleep(0.5)
        conn = await asyncpg.connect(db)
        rows = await conn.fetch("SELECT extract(epoch FROM exported_at) * 1000 - accepted_ms FROM ats_events")
        await conn.close()
        pg_lag = [float(r[0]) for r in rows]
        for name, values in (("postgres", pg_lag), ("nats", arrivals)):
            print(f"[2] lag {name:8} at {rate}/s ({len(values)} events over {seconds:.0f} s): p50 {pct(values, 50):.1f} ms,"
                  f" p99 {pct(values, 99):.1f} ms, max {max(values):.1f} ms", flush=True)
    finally:
        await nc.close()
        node.kill()
        await delete_stream(nats_server.url, "LAG")


async def drain(root: str, sink: str, rate: int, outage_s: float, pg: PostgresServer, nats_server: NatsServer) -> None:
    if sink == "postgres":
        env = {**BASE, "ATS_EXPORT_POSTGRES": pg.create_db(f"drain_{int(time.time())}")}
    else:
        env = {**BASE, "ATS_EXPORT_NATS": nats_server.url, "ATS_EXPORT_NATS_STREAM": "DRAIN"}
    node = NodeProcess(f"{root}/drain-{sink}", env=env).start()
    load = Load(node.url, rate)
    task = asyncio.create_task(load.run())
    t0 = time.monotonic()
    try:
        await asyncio.sleep(2)
        (pg.stop if sink == "postgres" else nats_server.kill)()
        await asyncio.sleep(outage_s)
        async with aiohttp.ClientSession() as session:
            backlog = (await exports(session, node.url))[sink]["backlog_events"]
            sent_before = load.sent
            (pg.start if sink == "postgres" else nats_server.start)()
            back = time.monotonic()
            while not (await exports(session, node.url))[sink]["up"]:  # the exporter's next retry reconnects
                await asyncio.sleep(0.01)
            up = time.monotonic()
            sent_up = load.sent
        done = await wait_caught_up(node.url, sink)
        ingest_rate = load.sent / (time.monotonic() - t0)
        drain_rate = (backlog + load.sent - sent_before) / (done - up)
        print(f"[3] drain {sink:8}: backlog {backlog} after {outage_s:.0f} s down; reconnected {up - back:.2f} s after"
              f" the sink's return (backoff), then drained in {done - up:.2f} s while {load.sent - sent_up} more"
              f" arrived: {drain_rate:,.0f} entries/s vs ingest {ingest_rate:,.0f}/s = {drain_rate / ingest_rate:.1f}x",
              flush=True)
    finally:
        load.stop = True
        await task
        node.kill()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rate", type=int, default=500)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--outage-s", type=float, default=10)
    parser.add_argument("--parts", default="1,2,3", help="which figures to measure (comma-separated)")
    args = parser.parse_args()
    parts = set(args.parts.split(","))
    pg, nats_server = PostgresServer().start(), NatsServer().start()
    try:
        with tempfile.TemporaryDirectory(prefix="ats-bench-export-") as root:
            for sink in ("postgres", "nats") if "1" in parts else ():
                await catch_up(root, sink, args.events, pg, nats_server)
            if "2" in parts:
                await lag(root, args.rate, args.seconds, pg, nats_server)
            for sink in ("postgres", "nats") if "3" in parts else ():
                await drain(root, sink, args.rate, args.outage_s, pg, nats_server)
    finally:
        pg.remove()
        nats_server.remove()


if __name__ == "__main__":
    asyncio.run(main())
