"""Benchmark a node holding 1M events: build rate, start-up time to serving reads, memory.

    python scripts/bench_node.py [--events 1000000] [--agents 10000] [--data DIR] [--keep] [--runs 3]
                                 [--plan platformium] [--build-with writer|append_batch]

a. Build: a data dir holding --events events, written by the node's own code in this process
   (node/keys.py load_or_create -> node.key; node/store/sqlite.py open_database; node/ingest.py
   OwnLog.open; envelopes parsed by ledger.events.parse_envelope, in batches of 5000, each one
   transaction with its tree hashes and signed checkpoint, written by the node's writer step:
   Committer._write with the budget book built as node/app.py builds it, or, in a tree without
   budgets or with --build-with append_batch, node/store/logs.py append_batch), so the file is
   exactly what a node would have written. Envelopes (kinds act/dat/cpt/trt 7:1:1:1, from
   --agents signers) are pre-signed in a multiprocessing pool running alongside the writer. Prints
   the build rate and file size. With --data DIR holding a ledger already, that ledger is reused
   (each run adds the 20k events of step c to it); a new or empty DIR is built and kept.
b. Start-up: the real node process (NodeProcess) on that dir; time from spawn to the ready line, and
   to the first successful GET /v1/log/checkpoint and GET /v1/log/proof/inclusion of a random event
   id ("serving reads"; the proof is then verified against the checkpoint, untimed); --runs times,
   with the median. Target <= 1 s.
c. Memory: VmRSS / VmHWM of the node process (/proc/<pid>/status) after start, after 20k more
   events submitted over HTTP (batches of 500, 4 connections), after 2,000 reads on 8 connections
   (inclusion proofs of random ids and usage of their signers, alternating), with read latencies;
   then 400 sequential reads for the per-read service time. Target <= 150 MB RSS.
A temp data dir lives under /tmp and is removed at the end unless --keep. Only 127.0.0.1 is
contacted; every node started is killed on exit, Ctrl-C or error.
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import multiprocessing as mp
import os
import random
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import aiohttp  # noqa: E402

from bench_ingest import (  # noqa: E402
    CBOR, cbor_array, loadavg, percentile, proc_cpu_s, proc_mem_mb, presign, sign_range,
)
from ledger.checkpoint import open_checkpoint  # noqa: E402
from ledger.events import parse_envelope  # noqa: E402
from ledger.merkle import verify_inclusion  # noqa: E402
from node.ingest import OwnLog  # noqa: E402
from node.keys import load_or_create  # noqa: E402
from node.store import logs as log_store  # noqa: E402
from node.store.sqlite import open_database  # noqa: E402
from tests.integration.nodeproc import NodeProcess  # noqa: E402

STARTUP_TARGET_S = 1.0
RSS_TARGET_MB = 150.0
SKEW_MS = 3_600_000
BUILD_BATCH = 5000
EXTRA_EVENTS = 20_000
READS = 2000


def dir_size_mb(data: str) -> float:
    return sum(os.path.getsize(os.path.join(data, f)) for f in os.listdir(data)
               if f.startswith("ledger.sqlite")) / 2**20


# -- a. build ----------------------------------------------------------------------------------------


def node_writer(conn: Any, own: OwnLog, now_ms: int, plan: str, use_book: bool) -> tuple[str, Any]:
    """The node's own writer step for a batch of parsed envelopes, as `ats node` would run it.

    When this tree has a budget book (node/budgets.py), that is Committer._write itself, with the
    book built as node/app.py builds it from the node's settings (defaults < ATS_* env, with
    default_plan=plan), so budget counters and receipts are written as by a node. Otherwise (or with
    --build-with append_batch) it is node/store/logs.py append_batch, the append transaction alone.
    """
    try:
        from node.budgets import BudgetBook
    except ImportError:
        BudgetBook = None
    if BudgetBook is None or not use_book:
        def append(envs: list[Any], now: int) -> None:
            frontier, _note = log_store.append_batch(conn, own.origin_id, own.frontier, envs, now, own.sign)
            own.frontier = frontier
        return "node/store/logs.py append_batch", append

    from node.clock import SystemClock
    from node.config import load as load_config
    from node.ingest import Committer
    from node.metrics import NodeMetrics

    cfg = load_config(None, {**os.environ, "ATS_DEFAULT_PLAN": plan, "ATS_SKEW_MS": str(SKEW_MS)})
    book = BudgetBook.from_config(cfg, own.public_key)
    book.load(conn, now_ms)
    committer = Committer(None, own, SystemClock(), NodeMetrics(lambda: own.size, lambda: own.checkpoint_size),  # type: ignore[arg-type]
                          events_max=BUILD_BATCH, linger_ms=0, skew_ms=SKEW_MS, book=book)

    def write(envs: list[Any], now: int) -> None:
        out = committer._write(conn, envs, now)
        results, frontier, note = out[0], out[1], out[2]
        refused = [r.status for r in results if r.status != "accepted"]
        if refused:
            raise SystemExit(f"the writer refused {len(refused)} events, e.g. {refused[:3]}")
        own.frontier, own.checkpoint_note, own.checkpoint_size = frontier, note, frontier.size

    return f"node/ingest.py Committer._write with the budget book (default_plan={plan})", write


def build(data: str, events: int, agents: int, plan: str, use_book: bool) -> None:
    os.makedirs(data, exist_ok=True)
    seed, _created = load_or_create(os.path.join(data, "node.key"))
    conn = open_database(os.path.join(data, "ledger.sqlite"))  # synchronous=full, as the node's default
    try:
        own = OwnLog(seed)
        own.open(conn, int(time.time() * 1000))
        if own.size:
            raise SystemExit(f"{data} already holds {own.size} events")
        how, write = node_writer(conn, own, int(time.time() * 1000), plan, use_book)
        print(f"[a] building with {how}, batches of {BUILD_BATCH}", flush=True)
        ts = int(time.time() * 1000)
        tag = os.urandom(8)
        jobs = [(s, min(BUILD_BATCH, events - s), agents, ts, tag, "mix") for s in range(0, events, BUILD_BATCH)]
        t0 = time.monotonic()
        parse_s = append_s = 0.0
        report_at = t0 + 10
        with mp.get_context("fork").Pool(os.cpu_count() or 1) as pool:
            for raws in pool.imap(sign_range, jobs):
                t = time.monotonic()
                envs = [parse_envelope(r) for r in raws]
                t1 = time.monotonic()
                write(envs, int(time.time() * 1000))
                t2 = time.monotonic()
                parse_s += t1 - t
                append_s += t2 - t1
                if t2 >= report_at:
                    report_at = t2 + 10
                    print(f"    ... {own.size:,} events, {own.size / (t2 - t0):,.0f}/s", flush=True)
        elapsed = time.monotonic() - t0
    finally:
        conn.close()
    print(f"[a] built {events:,} events ({agents} agents, kinds act/dat/cpt/trt 7:1:1:1) in {elapsed:.1f} s = "
          f"{events / elapsed:,.0f} events/s (signing in a {os.cpu_count()}-process pool alongside; "
          f"in this process: parse {parse_s:.1f} s, write {append_s:.1f} s = {append_s / events * 1e6:.0f} us/event)")
    print(f"    ledger.sqlite {dir_size_mb(data):,.1f} MiB = {dir_size_mb(data) * 2**20 / events:.0f} bytes/event")


def sample(data: str, n: int, rng: random.Random) -> tuple[int, list[tuple[bytes, bytes]]]:
    """(log size, [(event id, signer)] of n random entries of the node's own origin), read-only."""
    conn = sqlite3.connect(f"file:{os.path.join(data, 'ledger.sqlite')}?mode=ro", uri=True)
    try:
        ((origin, size),) = conn.execute("SELECT id, size FROM origins ORDER BY id LIMIT 1").fetchall()
        out = []
        for idx in rng.sample(range(size), min(n, size)):
            out.append(conn.execute("SELECT event_id, signer FROM entries WHERE origin = ? AND idx = ?",
                                    (origin, idx)).fetchone())
        return size, out
    finally:
        conn.close()


# -- b. start-up -------------------------------------------------------------------------------------


def _get(conn: http.client.HTTPConnection, path: str) -> tuple[int, bytes]:
    conn.request("GET", path)
    r = conn.getresponse()
    return r.status, r.read()


def start_and_serve(data: str, event_id: bytes, plan: str) -> tuple[NodeProcess, dict[str, float]]:
    """Spawn a node; time to ready line, to checkpoint, to an inclusion proof (verified, untimed)."""
    node = NodeProcess(data, env={"ATS_SKEW_MS": str(SKEW_MS), "ATS_DEFAULT_PLAN": plan, "ATS_BATCH_EVENTS_MAX": "1000",
                                  "ATS_BODY_BYTES_MAX": str(8 << 20)})
    t0 = time.monotonic()
    node.start()
    t_ready = time.monotonic() - t0
    try:
        conn = http.client.HTTPConnection("127.0.0.1", node.port, timeout=10)
        deadline = time.monotonic() + 20
        while True:
            try:
                status, note = _get(conn, "/v1/log/checkpoint")
                if status == 200:
                    t_cp = time.monotonic() - t0
                    status, body = _get(conn, f"/v1/log/proof/inclusion?id={event_id.hex()}")
                    if status == 200:
                        break
            except (OSError, http.client.HTTPException):
                conn.close()
            if time.monotonic() > deadline:
                raise RuntimeError("node did not serve reads within 20 s")
            time.sleep(0.005)
        t_serving = time.monotonic() - t0
        conn.close()
        cp, _ = open_checkpoint(note.decode(), bytes.fromhex(node.origin))
        proof = json.loads(body)
        assert proof["size"] == cp.size and verify_inclusion(
            proof["index"], proof["size"], bytes.fromhex(proof["leaf_hash"]),
            [bytes.fromhex(h) for h in proof["proof"]], cp.root), "inclusion proof does not verify"
    except BaseException:
        node.kill()
        raise
    return node, {"ready": t_ready, "checkpoint": t_cp, "serving": t_serving, "size": cp.size}


# -- c. memory ---------------------------------------------------------------------------------------


async def submit_batches(url: str, envelopes: list[bytes], batch: int, conns: int) -> tuple[int, float]:
    bodies = [cbor_array(envelopes[i : i + batch]) for i in range(0, len(envelopes), batch)]
    accepted = 0
    it = iter(bodies)

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal accepted
        for body in it:
            async with session.post(url + "/v1/events/batch", data=body, headers=CBOR) as r:
                doc = await r.json()
                assert r.status == 200, doc
                accepted += doc["accepted"]

    t = time.monotonic()
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=120)) as session:
        await asyncio.gather(*(worker(session) for _ in range(conns)))
    return accepted, time.monotonic() - t


async def reads(url: str, picks: list[tuple[bytes, bytes]], n: int, conns: int) -> dict[str, list[float]]:
    """n reads, alternating inclusion proof (random id) and usage (that event's signer)."""
    lat: dict[str, list[float]] = {"inclusion": [], "usage": []}
    errors: list[str] = []
    it = iter(range(n))

    async def worker(session: aiohttp.ClientSession) -> None:
        for i in it:
            event_id, signer = picks[i % len(picks)]
            kind = "inclusion" if i % 2 == 0 else "usage"
            path = (f"/v1/log/proof/inclusion?id={event_id.hex()}" if kind == "inclusion"
                    else f"/v1/agents/{signer.hex()}/usage")
            t = time.monotonic()
            async with session.get(url + path) as r:
                await r.read()
                if r.status != 200:
                    errors.append(f"{path}: {r.status}")
            lat[kind].append((time.monotonic() - t) * 1000)

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(conns)))
    if errors:
        raise RuntimeError(f"{len(errors)} reads failed, e.g. {errors[:3]}")
    return lat


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--agents", type=int, default=10_000, help="distinct signers in the built ledger")
    ap.add_argument("--data", help="data dir to reuse (or build into, and keep)")
    ap.add_argument("--keep", action="store_true", help="keep the temp data dir")
    ap.add_argument("--runs", type=int, default=3, help="start-up measurements")
    ap.add_argument("--plan", default="platformium",
                    help="ATS_DEFAULT_PLAN for the build and the node (platformium: no limits, so every event fits)")
    ap.add_argument("--build-with", choices=("writer", "append_batch"), default="writer",
                    help="writer: the node's Committer._write with its budget book (when the tree has one);"
                         " append_batch: the append transaction alone")
    args = ap.parse_args(argv)
    rng = random.Random(7)
    print(f"machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}, load average {loadavg()}")

    base = None
    if args.data:
        data = os.path.abspath(args.data)
    else:
        base = tempfile.mkdtemp(prefix="ats-bench-node-", dir="/tmp")
        data = os.path.join(base, "data")
    nodes: list[NodeProcess] = []
    summary: dict[str, Any] = {}
    try:
        if os.path.exists(os.path.join(data, "ledger.sqlite")) and sample(data, 1, rng)[0] > 0:
            print(f"[a] reusing {data}: {sample(data, 1, rng)[0]:,} events, {dir_size_mb(data):,.1f} MiB")
        else:
            build(data, args.events, args.agents, args.plan, args.build_with == "writer")
        size, picks = sample(data, 1000, rng)
        summary["size"] = size

        # Sign the 20k extra events now (ts = now; the node runs with a 1 h skew).
        extra = presign(EXTRA_EVENTS, 1000, int(time.time() * 1000))

        print(f"\n[b] start-up on {size:,} events (spawn → ready line → checkpoint → inclusion proof):")
        times = []
        node = None
        for run in range(args.runs):
            node, t = start_and_serve(data, rng.choice(picks)[0], args.plan)
            nodes.append(node)
            times.append(t["serving"])
            mem = proc_mem_mb(node.proc.pid)  # type: ignore[union-attr]
            print(f"    run {run + 1}: ready line {t['ready']:.3f} s, checkpoint {t['checkpoint']:.3f} s, "
                  f"serving reads {t['serving']:.3f} s (RSS {mem['VmRSS']:.1f} MB, HWM {mem['VmHWM']:.1f} MB)")
            if run < args.runs - 1:
                node.stop()
        median = statistics.median(times)
        summary["startup"] = median
        summary["startups"] = times
        print(f"    median {median:.3f} s (target <= {STARTUP_TARGET_S} s)")

        # c. memory, on the last node started.
        assert node is not None
        pid = node.proc.pid  # type: ignore[union-attr]
        mem: list[tuple[str, dict[str, float]]] = [("after start", proc_mem_mb(pid))]
        cpu0 = proc_cpu_s(pid)
        accepted, secs = asyncio.run(submit_batches(node.url, extra, 500, 4))
        assert accepted == EXTRA_EVENTS, accepted
        mem.append((f"after +{EXTRA_EVENTS // 1000}k events (HTTP batches)", proc_mem_mb(pid)))
        print(f"\n[c] submitted {accepted:,} events in batches of 500 on 4 connections: {secs:.2f} s "
              f"= {accepted / secs:,.0f} events/s (node CPU {proc_cpu_s(pid) - cpu0:.2f} s)")
        t = time.monotonic()
        lat = asyncio.run(reads(node.url, picks, READS, 8))
        secs = time.monotonic() - t
        mem.append((f"after {READS:,} reads (proof/usage)", proc_mem_mb(pid)))
        for kind, values in lat.items():
            values.sort()
            print(f"    {kind}: {len(values)} reads, p50 {percentile(values, 50):.2f} ms, "
                  f"p99 {percentile(values, 99):.2f} ms, max {values[-1]:.2f} ms")
        print(f"    {READS} reads in {secs:.2f} s on 8 connections")
        seq = asyncio.run(reads(node.url, picks[500:], 400, 1))  # after the memory figure
        for kind, values in seq.items():
            values.sort()
            print(f"    sequential {kind} (1 connection, {len(values)} reads): p50 {percentile(values, 50):.2f} ms, "
                  f"p99 {percentile(values, 99):.2f} ms")
        for label, m in mem:
            print(f"    memory {label}: VmRSS {m['VmRSS']:.1f} MB, VmHWM {m['VmHWM']:.1f} MB")
        summary["mem"] = mem
    finally:
        for n in nodes:
            n.kill()
        if base:
            if args.keep:
                print(f"\nkept data dir {data}")
            else:
                shutil.rmtree(base, ignore_errors=True)

    print("\n== summary ==")
    rss_max = max(m["VmRSS"] for _, m in summary["mem"])
    hwm = max(m["VmHWM"] for _, m in summary["mem"])
    rows = [
        ("events in ledger", f"{summary['size']:,}", ""),
        ("start-up to serving reads (median)", f"{summary['startup']:.3f} s",
         f"<= {STARTUP_TARGET_S} s: {'PASS' if summary['startup'] <= STARTUP_TARGET_S else 'MISS'}"),
        ("  runs", ", ".join(f"{x:.3f}" for x in summary["startups"]), ""),
    ] + [(f"RSS {label}", f"{m['VmRSS']:.1f} MB", "") for label, m in summary["mem"]] + [
        ("max RSS / peak (VmHWM)", f"{rss_max:.1f} / {hwm:.1f} MB",
         f"<= {RSS_TARGET_MB:g} MB: {'PASS' if max(rss_max, hwm) <= RSS_TARGET_MB else 'MISS'}"),
    ]
    w0 = max(len(r[0]) for r in rows)
    w1 = max(len(r[1]) for r in rows)
    for a, b, c in rows:
        print(f"  {a:<{w0}}  {b:>{w1}}  {c}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
