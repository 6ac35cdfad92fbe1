"""What the LLM gateway adds to a call, and whether any token goes unrecorded (docs/gateway.md).

    python scripts/bench_gateway.py [--calls 300] [--disconnects 100]

An OpenAI-compatible upstream (tests/integration/fake_openai.py) runs in its own process, and a
real node with the gateway in another. The same official `openai` client calls the upstream
directly and through the gateway, interleaved (direct, gateway, direct, ...), non-streaming
(max_tokens 8): the added latency is the gateway's percentile minus the direct one, one call at
a time (p50, p99) and with 8 threads at once (p50). Then:

- 100 streams whose client leaves after the first event (10 at once, then the next ten), and
- a call in flight when the node is killed with SIGKILL (then restarted),

after which the tokens the upstream produced (its prompt tokens, and every completion token it
sent) are compared with the tokens the node's ledger charged the agent: unrecorded =
max(0, produced − recorded). Recorded may exceed produced where a call was charged at its
reservation (a cut stream, the killed call): over-recording is the safe side.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import openai  # noqa: E402

from ledger.credentials import mint  # noqa: E402
from ledger.signing import public_key_from_seed  # noqa: E402
from tests.agentkit import TestAgent  # noqa: E402
from tests.integration.nodeproc import NodeProcess  # noqa: E402

AUTH = TestAgent(bytes([1]) * 32)
MESSAGES = [{"role": "user", "content": "Say hello in eight tokens."}]


def serve_upstream() -> None:
    from tests.integration.fake_openai import FakeOpenAI

    with FakeOpenAI(slow_ms=20) as up:
        print(up.url, flush=True)
        sys.stdin.read()  # until the parent closes our stdin


def get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def post_cbor(url: str, body: bytes) -> int:
    req = urllib.request.Request(url + "/v1/events", data=body, method="POST", headers={"Content-Type": "application/cbor"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status


def pct(values: list[float], p: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(p / 100 * len(values)))]


def cpu_ms(pid: int) -> float:
    """utime + stime of a process, in ms (/proc/<pid>/stat)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def timed(client: openai.OpenAI) -> float:
    t = time.perf_counter()
    client.chat.completions.create(model="test-model", messages=MESSAGES, max_tokens=8)
    return (time.perf_counter() - t) * 1000


def interleaved(direct: openai.OpenAI, gateway: openai.OpenAI, n: int) -> tuple[list[float], list[float]]:
    d, g = [], []
    for _ in range(n):
        d.append(timed(direct))
        g.append(timed(gateway))
    return d, g


def recorded_tokens(node: NodeProcess, agent_hex: str) -> int:
    doc = get(f"{node.url}/v1/agents/{agent_hex}/usage?kind=act")
    if doc.get("truncated"):
        raise SystemExit("usage listing truncated; raise usage_events_max")
    return sum(e["body"].get("units", 0) for e in doc["events"] if e["signer"] == node.origin)


def abandon_stream(node: NodeProcess, token: str) -> None:
    u = urllib.parse.urlsplit(node.url)
    conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
    body = json.dumps({"model": "slow-model", "stream": True, "messages": MESSAGES}).encode()
    conn.request("POST", "/llm/v1/chat/completions", body=body,
                 headers={"Content-Type": "application/json", "Authorization": f"Bearer {token}"})
    resp = conn.getresponse()
    resp.read1(64)
    conn.sock.close()
    conn.close()


def wait_recorded(node: NodeProcess, agent_hex: str, calls: int, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        events = get(f"{node.url}/v1/agents/{agent_hex}/usage?kind=act")["events"]
        if len(events) >= calls:
            return
        time.sleep(0.2)
    raise SystemExit(f"only {len(events)} of {calls} calls recorded after {timeout_s} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=300, help="calls per path, one at a time")
    ap.add_argument("--concurrent-calls", type=int, default=25, help="calls per thread and path at 8 threads")
    ap.add_argument("--disconnects", type=int, default=100)
    ap.add_argument("--synchronous", choices=["full", "normal"], default="full", help="the node's sqlite_synchronous")
    ap.add_argument("--serve-upstream", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_upstream:
        serve_upstream()
        return
    upstream_proc = subprocess.Popen([sys.executable, __file__, "--serve-upstream"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
    upstream = upstream_proc.stdout.readline().strip()
    tmp = tempfile.mkdtemp(prefix="bench-gateway-")
    env = {"ATS_LLM_GATEWAY": "true", "ATS_LLM_UPSTREAM": upstream, "ATS_AUTHORITIES": AUTH.public_key.hex(),
           "ATS_ANOMALY_DETECTION": "false", "ATS_USAGE_EVENTS_MAX": "100000", "ATS_LOG_LEVEL": "warning",
           "ATS_SQLITE_SYNCHRONOUS": args.synchronous}
    node = NodeProcess(os.path.join(tmp, "node"), env=env).start()
    try:
        seed = os.urandom(32)
        agent = public_key_from_seed(seed)
        body = {"agent": agent, "user": AUTH.public_key, "team": "bench", "platform": "bench", "plan": "platformium"}
        assert post_cbor(node.url, AUTH.envelope("agent.register", body)) == 201
        token = mint(seed, now_s=int(time.time()), ttl_s=3600)
        direct = openai.OpenAI(base_url=upstream, api_key="sk-direct", max_retries=0)
        gateway = openai.OpenAI(base_url=node.url + "/llm/v1", api_key=token, max_retries=0)
        interleaved(direct, gateway, 20)  # warm-up: connections, caches
        cpu0 = cpu_ms(node.proc.pid)
        d, g = interleaved(direct, gateway, args.calls)
        node_cpu = (cpu_ms(node.proc.pid) - cpu0) / args.calls
        print(f"node sqlite_synchronous={args.synchronous}")
        print(f"one at a time, {args.calls} calls per path (ms): direct p50 {pct(d, 50):.2f} p99 {pct(d, 99):.2f};"
              f" gateway p50 {pct(g, 50):.2f} p99 {pct(g, 99):.2f}")
        print(f"added latency one at a time: p50 {pct(g, 50) - pct(d, 50):.2f} ms, p99 {pct(g, 99) - pct(d, 99):.2f} ms"
              f" (median of per-pair differences {statistics.median(b - a for a, b in zip(d, g)):.2f} ms)")
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            parts = list(pool.map(lambda _i: interleaved(direct, gateway, args.concurrent_calls), range(8)))
        d8 = [x for p in parts for x in p[0]]
        g8 = [x for p in parts for x in p[1]]
        print(f"node CPU time per gateway call (user + system, its charge included): {node_cpu:.2f} ms")
        print(f"8 at a time, {len(d8)} calls per path (ms): direct p50 {pct(d8, 50):.2f}, gateway p50 {pct(g8, 50):.2f};"
              f" added p50 {pct(g8, 50) - pct(d8, 50):.2f} ms")
        calls = 20 + args.calls + 8 * args.concurrent_calls
        wait_recorded(node, agent.hex(), calls)
        produced0 = get(upstream + "/_stats")["produced"]  # the direct calls produced tokens too
        recorded0 = recorded_tokens(node, agent.hex())

        for start in range(0, args.disconnects, 10):  # 10 at a time, each ten read on before the next
            n = min(10, args.disconnects - start)
            with concurrent.futures.ThreadPoolExecutor(10) as pool:
                list(pool.map(lambda _i: abandon_stream(node, token), range(n)))
            calls += n
            wait_recorded(node, agent.hex(), calls)
        produced = get(upstream + "/_stats")["produced"] - produced0
        recorded = recorded_tokens(node, agent.hex()) - recorded0
        print(f"after {args.disconnects} client disconnects mid-stream: upstream produced {produced} tokens, ledger"
              f" recorded {recorded}: unrecorded {max(0, produced - recorded)}, over-recorded {max(0, recorded - produced)}")

        pool = concurrent.futures.ThreadPoolExecutor(1)
        before = get(upstream + "/_stats")["calls"].get("chat:hang-model", 0)
        pending = pool.submit(lambda: gateway.chat.completions.create(model="hang-model", messages=MESSAGES, max_tokens=50))
        deadline = time.monotonic() + 10
        while get(upstream + "/_stats")["calls"].get("chat:hang-model", 0) == before and time.monotonic() < deadline:
            time.sleep(0.01)
        node.kill()
        try:
            pending.result(timeout=30)
        except openai.APIError:
            pass
        pool.shutdown()
        node.start()
        calls += 1
        wait_recorded(node, agent.hex(), calls)
        produced = get(upstream + "/_stats")["produced"] - produced0  # the hung call produced nothing
        recorded = recorded_tokens(node, agent.hex()) - recorded0
        alerts = [a for a in get(f"{node.url}/v1/agents/{agent.hex()}/balance")["alerts"] if a["type"] == "call_recovered"]
        print(f"after kill -9 mid-call and restart: upstream produced {produced} tokens, ledger recorded {recorded}:"
              f" unrecorded {max(0, produced - recorded)}; call_recovered alerts {len(alerts)}")
    finally:
        node.kill()
        if os.environ.get("BENCH_DEBUG"):
            print(node.stderr()[-3000:])
        upstream_proc.stdin.close()
        upstream_proc.wait(timeout=10)
        subprocess.run(["rm", "-rf", tmp], check=False)


if __name__ == "__main__":
    main()
