"""Replication figures on the namespace harness: N real nodes, each in its own network namespace.

    python scripts/bench_cluster.py [--nodes 16] [--events 20] [--catchup 5000] [--interval-ms 200]

Run as root. Every node runs in its own namespace behind one bridge (tests/netns/cluster.py);
this process moves its own network namespace into the hub (setns), so its HTTP client sees the
nodes as a test client on the bridge would. Traffic stays inside the namespaces it creates.
Prints:
  1. propagation: time from the origin's commit of an event until the last node stored it,
     from each node's own entries.accepted_ms (read from the SQLite files, so the measurement
     puts no load on the nodes; one host clock) (target p99 <= 500 ms at N = 16);
  2. heal: an N/2 | N/2 partition with events on both sides; time from heal until every node's
     cluster digest matches (target <= 3 s);
  3. in-sync check: bytes of one frontier round trip between two converged nodes, request and
     answer as sent on the wire (target <= 512 bytes);
  4. catch-up: a fresh node fetching d events; bytes it received, from its interface counters,
     against the envelopes' own size (target <= 1.1 x), and its steady rate (from its own
     entries.accepted_ms, after the first page) against this machine's Ed25519 verify ceiling
     measured in the same run (target >= 0.75); the end-to-end rate with start-up is printed too,
     and the CPU the receiving node (all its processes) used per replicated event.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import json
import os
import sqlite3
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import aiohttp  # noqa: E402

from scripts.bench_ingest import tree_cpu_s  # noqa: E402
from tests.agentkit import TestAgent  # noqa: E402
from tests.netns.cluster import Cluster  # noqa: E402

CLONE_NEWNET = 0x40000000


def enter_namespace(name: str) -> None:
    """Move this thread (the only one that does network I/O here) into a named network namespace."""
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    fd = os.open(f"/var/run/netns/{name}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "setns failed")
    finally:
        os.close(fd)


def leave_namespace(fd: int) -> None:
    libc = ctypes.CDLL("libc.so.6", use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        raise OSError(ctypes.get_errno(), "setns back failed")


def verify_ceiling(seconds: float = 2.0) -> float:
    from multiprocessing import Pool

    with Pool(os.cpu_count() or 1) as pool:
        counts = pool.map(_verify_for, [seconds] * (os.cpu_count() or 1))
    return sum(counts) / seconds


def _verify_for(seconds: float) -> int:
    import nacl.bindings

    from ledger.events import parse_envelope
    from ledger.signing import signable

    env = parse_envelope(TestAgent().envelope())
    msg = env.sig + signable(env.event.raw)
    n, end = 0, time.monotonic() + seconds
    while time.monotonic() < end:
        for _ in range(100):
            nacl.bindings.crypto_sign_open(msg, env.event.signer)
        n += 100
    return n


async def get_json(session, url):
    async with session.get(url) as r:
        return r.status, await r.json()


def accepted_at(db_paths, event_id: bytes, deadline_s=10.0):
    """Per node, the wall-clock ms at which it stored the event (its entries.accepted_ms).

    Read from each node's SQLite file, not over HTTP: polling 16 nodes' APIs every few ms
    loads the very processes being measured (all nodes share this host's clock).
    """
    seen: dict[str, int] = {}
    end = time.monotonic() + deadline_s
    while len(seen) < len(db_paths) and time.monotonic() < end:
        for path in db_paths:
            if path in seen:
                continue
            conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
            try:
                row = conn.execute("SELECT min(accepted_ms) FROM entries WHERE event_id = ?", (event_id,)).fetchone()
            finally:
                conn.close()
            if row[0] is not None:
                seen[path] = row[0]
        time.sleep(0.05)
    return seen


async def digests(session, urls):
    docs = await asyncio.gather(*(get_json(session, f"{u}/v1/cluster/digest") for u in urls))
    return [d["digest"] for _s, d in docs]


async def wait_converged(session, urls, deadline_s=60.0):
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        if len(set(await digests(session, urls))) == 1:
            return True
        await asyncio.sleep(0.02)
    return False


async def run(c: Cluster, args) -> dict:
    out: dict = {}
    urls = [n.url for n in c.nodes]
    dbs = [os.path.join(n.data_dir, "ledger.sqlite") for n in c.nodes]
    agents = [TestAgent() for _ in range(20)]
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as s:
        await wait_converged(s, urls)
        # 1. propagation
        lat = []
        for k in range(args.events):
            env = agents[k % 20].envelope("act", {"op": "x", "cost": 1})
            async with s.post(f"{urls[k % len(urls)]}/v1/events", data=env, headers={"Content-Type": "application/cbor"}) as r:
                rid = bytes.fromhex((await r.json())["id"])
            seen = await asyncio.get_running_loop().run_in_executor(None, accepted_at, dbs, rid)
            # from the origin's commit to the last node's
            lat.append((max(seen.values()) - min(seen.values())) / 1000 if len(seen) == len(urls) else float("inf"))
            await asyncio.sleep(0.2)
        lat.sort()
        out["propagation_ms"] = {"p50": 1000 * lat[len(lat) // 2], "p99": 1000 * lat[min(len(lat) - 1, int(0.99 * len(lat)))],
                                 "max": 1000 * lat[-1], "n": len(lat)}
        # 2. partition N/2 | N/2, events on both sides, heal
        half = len(urls) // 2
        c.partition([list(range(half)), list(range(half, len(urls)))])
        for side in (0, half):
            for k in range(10):
                env = agents[k].envelope("act", {"op": "x", "cost": 1})
                async with s.post(f"{urls[side]}/v1/events", data=env, headers={"Content-Type": "application/cbor"}) as r:
                    assert r.status == 201
        await wait_converged(s, urls[:half])
        await wait_converged(s, urls[half:])
        t0 = time.monotonic()
        c.heal_all()
        ok = await wait_converged(s, urls)
        out["heal_s"] = (time.monotonic() - t0) if ok else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=16)
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--catchup", type=int, default=5000)
    ap.add_argument("--interval-ms", type=int, default=200)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("bench_cluster needs root: it creates network namespaces")
    n = args.nodes
    ring = lambda i: {  # noqa: E731 each node starts knowing two neighbours; peer exchange does the rest
        "ATS_OPEN_MEMBERSHIP": "true", "ATS_DISCOVERY": "off", "ATS_BUDGETS": "false",
        "ATS_BATCH_EVENTS_MAX": "1000", "ATS_BODY_BYTES_MAX": str(8 << 20),
        "ATS_REPLICATION_INTERVAL_MS": str(args.interval_ms),
        "ATS_PEERS": ",".join(f"http://10.213.0.{(j % n) + 2}:8470" for j in (i + 1, i - 1)),
    }
    print("verify ceiling ... ", end="", flush=True)
    ceiling = verify_ceiling()
    print(f"{ceiling:,.0f} verifies/s")
    root_ns = os.open("/proc/self/ns/net", os.O_RDONLY)
    with tempfile.TemporaryDirectory() as tmp, Cluster(n + 1, base_dir=tmp, node_env=ring) as c:
        print(f"cluster: {n} nodes in namespaces (+1 kept for the catch-up phase) ...", flush=True)
        c.kill(n)  # the spare node joins later, empty
        c.nodes_running = n
        enter_namespace(c.hub)
        try:
            live = Cluster.__new__(Cluster)
            live.__dict__ = dict(c.__dict__)
            live.nodes = c.nodes[:n]
            results = asyncio.run(run(live, args))
            # 3. in-sync check: one frontier round trip between two converged nodes
            results["in_sync_bytes"] = in_sync_bytes(c)
        finally:
            leave_namespace(root_ns)
        # 4. catch-up: fill node 0 with d events, then start the spare node empty
        results.update(catch_up(c, n, args.catchup, ceiling))
    print(json.dumps(results, indent=2))
    p99 = results["propagation_ms"]["p99"]
    print("\n== summary ==")
    print(f"  propagation to all {n} nodes  p50 {results['propagation_ms']['p50']:.0f} ms  p99 {p99:.0f} ms"
          f"   target p99 <= 500 ms: {'met' if p99 <= 500 else 'MISS'}")
    heal = results["heal_s"]
    print(f"  digests match after {n // 2}|{n // 2} heal   {heal if heal is None else f'{heal:.2f} s'}"
          f"   target <= 3 s: {'met' if heal is not None and heal <= 3 else 'MISS'}")
    print(f"  in-sync check                {results['in_sync_bytes']} bytes in one round trip"
          f"   target <= 512: {'met' if results['in_sync_bytes'] <= 512 else 'MISS'}")
    ratio = results["catchup_wire_ratio"]
    print(f"  catch-up wire bytes          {ratio:.3f} x payload   target <= 1.1: {'met' if ratio <= 1.1 else 'MISS'}")
    print(f"  catch-up end to end          {results['catchup_rate_end_to_end']:,.0f} events/s"
          f" ({results['catchup_events']} events in {results['catchup_s']:.2f} s, node start-up included)")
    print(f"  catch-up CPU of the receiver {results['catchup_cpu_us']:.0f} us per replicated event (all its processes,"
          " start-up included)")
    rate = results["catchup_rate"]
    print(f"  catch-up rate                {rate:,.0f} events/s = {rate / ceiling:.2f} of the verify ceiling"
          f"   target >= 0.75: {'met' if rate / ceiling >= 0.75 else 'MISS'}")


def in_sync_bytes(c: Cluster) -> int:
    """Bytes of one signed frontier request with a matching digest, and its answer, as on the wire."""
    import http.client

    from consensus.messages import peer_headers

    conn = http.client.HTTPConnection(c.nodes[1].addr, 8470, timeout=10)
    digest = json.loads(_get(c.nodes[1].addr, "/v1/cluster/digest"))["digest"]
    path = f"/v1/peer/frontier?digest={digest}"
    seed = os.urandom(32)
    from ledger.signing import public_key_from_seed

    now = int(time.time() * 1000)
    headers = peer_headers("GET", path, b"", now, public_key_from_seed(seed), seed, os.urandom(16))
    request_bytes = len(f"GET {path} HTTP/1.1\r\nHost: {c.nodes[1].addr}:8470\r\nAccept-Encoding: identity\r\n")
    request_bytes += sum(len(f"{k}: {v}\r\n") for k, v in headers.items()) + 2
    conn.request("GET", path, headers=headers)
    resp = conn.getresponse()
    body = resp.read()
    response_bytes = len(f"HTTP/1.1 {resp.status} {resp.reason}\r\n") + sum(len(f"{k}: {v}\r\n") for k, v in resp.getheaders()) + 2 + len(body)
    conn.close()
    assert resp.status == 204, (resp.status, body[:200])
    return request_bytes + response_bytes


def _get(addr: str, path: str) -> bytes:
    import http.client

    conn = http.client.HTTPConnection(addr, 8470, timeout=10)
    conn.request("GET", path)
    body = conn.getresponse().read()
    conn.close()
    return body


def catch_up(c: Cluster, spare: int, d: int, ceiling: float) -> dict:
    agents = [TestAgent() for _ in range(50)]
    envelopes = [agents[i % 50].envelope("act", {"op": "x", "cost": 1}) for i in range(d)]
    payload = sum(len(e) for e in envelopes)
    for i in range(0, d, 1000):
        chunk = envelopes[i:i + 1000]
        n = len(chunk)
        head = bytes([0x99, n >> 8, n & 0xFF])
        status, _h, body = c.request(0, "POST", "/v1/events/batch", head + b"".join(chunk), {"Content-Type": "application/cbor"})
        assert status == 200 and json.loads(body)["accepted"] == n, body[:300]
    # the spare node starts empty and knows only node 0
    rx0, _tx0 = c.counters(spare)
    t0 = time.monotonic()
    c.start(spare, env={"ATS_OPEN_MEMBERSHIP": "true", "ATS_DISCOVERY": "off", "ATS_BUDGETS": "false",
                        "ATS_PEERS": c.nodes[0].url, "ATS_REPLICATION_ENTRIES_MAX": "1000"})
    deadline = time.monotonic() + 300
    origin0 = c.nodes[0].origin
    while time.monotonic() < deadline:
        status, _h, body = c.request(spare, "GET", "/v1/cluster/digest")
        sizes = {o["origin"]: o["size"] for o in json.loads(body)["origins"]} if status == 200 else {}
        if sizes.get(origin0, 0) >= d:
            break
        time.sleep(0.2)
    took = time.monotonic() - t0
    rx1, _tx1 = c.counters(spare)
    # CPU of the receiving node, all its processes (workers too), start-up included
    proc = c.nodes[spare].proc
    cpu = tree_cpu_s(proc.pid) if proc is not None and proc.poll() is None else float("nan")
    # the steady rate, from the spare's own accepted_ms: pages after the first, without the
    # process start-up and the 0.2 s polling above
    conn = sqlite3.connect(f"file:{os.path.join(c.nodes[spare].data_dir, 'ledger.sqlite')}?mode=ro", uri=True)
    try:
        times = [t for (t,) in conn.execute(
            "SELECT e.accepted_ms FROM entries e JOIN origins o ON o.id = e.origin WHERE o.public_key = ?"
            " ORDER BY e.idx", (bytes.fromhex(origin0),))]
    finally:
        conn.close()
    first = times.count(times[0])
    steady = (len(times) - first) / max(1e-3, (times[-1] - times[0]) / 1000)
    return {"catchup_events": d, "catchup_payload_bytes": payload, "catchup_rx_bytes": rx1 - rx0,
            "catchup_wire_ratio": (rx1 - rx0) / payload, "catchup_s": took, "catchup_rate_end_to_end": d / took,
            "catchup_rate": steady, "catchup_cpu_us": cpu / d * 1e6}


if __name__ == "__main__":
    main()
