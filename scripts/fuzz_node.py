"""A longer fuzz run against one real node: hostile bodies, odd query parameters, optional schemathesis.

    python scripts/fuzz_node.py [--duration 300] [--seed N] [--url http://127.0.0.1:8470]
                                [--schemathesis 0] [--health-every 200] [--timeout 10]

Without --url it starts its own node (tests/integration/nodeproc.py) in a temp data dir and kills
it at the end. For --duration seconds it sends, round-robin:
  - hostile CBOR bodies (tests/fuzzkit.py: shared references, tags, indefinite lengths, floats,
    lengths past the end, deep nests) to POST /v1/events, /v1/events/batch, /v1/quota/check;
  - hostile JSON bodies (deep nesting, big integers at the range edges, wrong types, not UTF-8,
    other charsets, garbage under Content-Encoding) to the same endpoints;
  - correctly signed events whose amounts sit at the range edges;
  - every GET path of the served OpenAPI with odd query values (Unicode digits, 2^63 and past,
    signs, empty, long) for its parameters;
  - the JSON endpoints beyond events (the LLM gateway's OpenAI and Anthropic dialects, the task
    meter, the peer messages: tests/fuzzkit.py JSON_POST_BASES), each a valid body with one field
    replaced by a hostile value, or a hostile whole body, with a valid agent token, or a valid body
    with one part of the token replaced (its own node runs the gateway in front of the tests' fake
    upstream, tests/integration/fake_openai.py);
and every --health-every requests checks GET /healthz. With --schemathesis S it also runs the
schemathesis CLI for S seconds over the served OpenAPI. It prints the count of requests, the
statuses seen, the error codes seen, and every 5xx, answer without a code, hang (no answer within
--timeout) and failed health check, then exits 1 if it found any. Replay with the printed seed.
"""

from __future__ import annotations

import argparse
import collections
import gzip
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import seed as seed_  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from ledger import encoding  # noqa: E402
from tests.agentkit import TestAgent  # noqa: E402
from ledger.credentials import mint  # noqa: E402
from tests.fuzzkit import JSON_POST_BASES, JSON_POST_EXTRA, hostile_item, json_body, json_value, signed_envelope, token_part, with_token_part  # noqa: E402
from tests.integration.fake_openai import FakeOpenAI  # noqa: E402
from tests.integration.http import request  # noqa: E402
from tests.integration.nodeproc import NodeProcess  # noqa: E402

CHUNK = 100
POSTS = ["/v1/events", "/v1/events/batch", "/v1/quota/check"]
ODD_VALUES = ["\u00b2", "\u0663", "\uff11", "+1", "-1", " 1", "1 ", "0x10", "1e3", "", "9223372036854775807",
              "9223372036854775808", "99999999999999999999999", "0" * 5000, "%", "\x00", "ab" * 32, "AB" * 32,
              "\u00e9", "null", "[]", "1.5", "NaN"]


class Tally:
    def __init__(self) -> None:
        self.requests = 0
        self.statuses: collections.Counter[int] = collections.Counter()
        self.codes: collections.Counter[str] = collections.Counter()
        self.findings: list[str] = []

    def record(self, what: str, fn: Callable[[], Any]) -> None:
        self.requests += 1
        try:
            reply = fn()
        except OSError as e:  # socket.timeout included: a hang, or the node is gone
            self.findings.append(f"HANG/NO ANSWER {what}: {type(e).__name__}: {e}")
            return
        self.statuses[reply.status] += 1
        if reply.code:
            self.codes[reply.code] += 1
        if reply.status >= 500:
            self.findings.append(f"{reply.status} {what}: {reply.body[:300]!r}")
        elif reply.status >= 400 and not reply.code:
            self.findings.append(f"{reply.status} without a code {what}: {reply.body[:200]!r}")


def get_paths(url: str) -> list[tuple[str, list[str]]]:
    doc = request(url, "GET", "/v1/openapi.json").json()
    out = []
    for path, ops in doc["paths"].items():
        op = ops.get("get")
        if not op:
            continue
        params = [p.get("$ref", "").rsplit("/", 1)[-1] if "$ref" in p else p["name"] for p in op.get("parameters", [])]
        refs = doc["components"].get("parameters", {})
        names = [refs[p]["name"] if p in refs else p for p in params]
        out.append((path, names))
    return out


def fuzz(url: str, duration_s: float, seed: int, health_every: int, timeout_s: float) -> Tally:
    tally = Tally()
    deadline = time.monotonic() + duration_s
    agent = TestAgent()
    rng = random.Random(seed)
    gateway_seed = rng.randbytes(32)
    paths = get_paths(url)

    def post(path: str, body: bytes, ctype: str, headers: dict[str, str] | None = None) -> None:
        tally.record(f"POST {path} {ctype} {body[:80]!r}",
                     lambda: request(url, "POST", path, body, ctype, headers, timeout_s=timeout_s))
        if tally.requests % health_every == 0:
            reply = request(url, "GET", "/healthz", timeout_s=timeout_s)
            if reply.status != 200:
                tally.findings.append(f"healthz {reply.status} after {tally.requests} requests: {reply.body[:200]!r}")

    def odd_get() -> None:
        path, names = rng.choice(paths)
        path = path.replace("{agent}", agent.public_key.hex()).replace("{id}", rng.choice(["ab" * 32, "all", "x"]))
        path = path.replace("{scope}", rng.choice(["agent", "team", "node"])).replace("{name}", "dashboard.js")
        query = "&".join(f"{n}={rng.choice(ODD_VALUES)}" for n in names if rng.random() < 0.7)
        from urllib.parse import quote

        target = path + ("?" + "&".join(quote(kv, safe="=") for kv in query.split("&")) if query else "")
        tally.record(f"GET {target[:200]}", lambda: request(url, "GET", target, timeout_s=timeout_s))

    def json_post(data: Any) -> None:
        path = data.draw(st.sampled_from(sorted(JSON_POST_BASES)))
        token = mint(gateway_seed, now_s=int(time.time()), ttl_s=3600)  # not the events' agent: it gets suspended
        doc = JSON_POST_BASES[path]
        shape = data.draw(st.integers(0, 2))
        if shape == 0:  # one hostile field
            field = data.draw(st.sampled_from(sorted(set(doc) | set(JSON_POST_EXTRA))))
            body = json.dumps({**doc, field: data.draw(json_value)}).encode()
        elif shape == 1:
            body = data.draw(json_body())
        else:  # a hostile part of the token
            token, body = with_token_part(token, *data.draw(token_part)), json.dumps(doc).encode()
        post(path, body, "application/json", {"Authorization": f"Bearer {token}"})

    def one(data: Any) -> None:
        path = data.draw(st.sampled_from(POSTS))
        which = data.draw(st.integers(0, 6))
        if which >= 5:
            json_post(data)
            return
        if which == 0:
            item = data.draw(hostile_item())
            post(path, encoding._head(4, 1) + item if path.endswith("batch") else item, "application/cbor")
        elif which == 1:
            body = data.draw(json_body())
            headers = None
            ctype = "application/json" + data.draw(st.sampled_from(["", "", "; charset=utf-8", "; charset=latin-1",
                                                                      "; charset=bogus"]))
            if data.draw(st.integers(0, 5)) == 0:
                body, headers = (gzip.compress(body) if data.draw(st.booleans()) else body[:50]), {"Content-Encoding": "gzip"}
            post(path, body, ctype, headers)
        elif which == 2:
            envs = data.draw(st.lists(signed_envelope(agent.public_key, agent.seed), min_size=1, max_size=4))
            body = encoding._head(4, len(envs)) + b"".join(envs) if path.endswith("batch") else envs[0]
            post(path, body, "application/cbor")
        else:
            odd_get()

    # hypothesis generates in chunks of CHUNK examples, each chunk from its own seed (seed, seed+1, ...),
    # so a run is bounded by the clock and replays from its seed; findings are tallied, never raised
    chunk = 0
    while time.monotonic() < deadline:
        seeded = seed_(seed + chunk)(settings(max_examples=CHUNK, deadline=None, database=None, phases=[Phase.generate],
                                              suppress_health_check=list(HealthCheck))(given(st.data())(one)))
        seeded()
        chunk += 1
    return tally


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=300, help="seconds of fuzzing (default 300)")
    ap.add_argument("--seed", type=int, default=None)
    ap.add_argument("--url", default=None, help="fuzz this node instead of starting one")
    ap.add_argument("--schemathesis", type=float, default=0, help="also run schemathesis for this many seconds")
    ap.add_argument("--health-every", type=int, default=200)
    ap.add_argument("--timeout", type=float, default=10, help="seconds without an answer that count as a hang")
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    print(f"fuzz_node: seed {seed}, {args.duration:.0f} s", flush=True)
    tmp = None
    node = None
    upstream = None
    try:
        url = args.url
        if url is None:
            tmp = tempfile.mkdtemp(prefix="ats-fuzz-")
            upstream = FakeOpenAI(slow_ms=1).__enter__()
            env = {"ATS_LLM_GATEWAY": "true", "ATS_LLM_UPSTREAM": upstream.url, "ATS_LLM_UPSTREAM_KEY": "sk-node",
                   "ATS_LLM_ANTHROPIC_UPSTREAM": upstream.url, "ATS_LLM_ANTHROPIC_UPSTREAM_KEY": "sk-anthropic-node",
                   "ATS_LLM_MODELS": "test-model,test-embed,claude-test", "ATS_LLM_TIMEOUT_MS": "5000"}
            node = NodeProcess(os.path.join(tmp, "node"), env=env).start()
            url = node.url
        started = time.monotonic()
        tally = fuzz(url, args.duration, seed, args.health_every, args.timeout)
        took = time.monotonic() - started
        st_rc = 0
        if args.schemathesis > 0:
            checks = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance"
            cmd = [sys.executable, "-m", "schemathesis.cli", "run", url + "/v1/openapi.json", "--url", url, "--checks",
                   checks, "--max-time", str(int(args.schemathesis)), "--seed", str(seed), "--warnings", "off"]
            st_run = subprocess.run(cmd, capture_output=True, text=True, timeout=args.schemathesis + 120,
                                    cwd=tmp or tempfile.gettempdir())
            st_rc = st_run.returncode
            print(st_run.stdout[-6000:])
        health = request(url, "GET", "/healthz", timeout_s=args.timeout)
        if health.status != 200:
            tally.findings.append(f"healthz {health.status} at the end: {health.body[:200]!r}")
        print(f"requests: {tally.requests} in {took:.1f} s ({tally.requests / max(took, 1e-9):.0f}/s)")
        print("statuses: " + ", ".join(f"{s}: {n}" for s, n in sorted(tally.statuses.items())))
        print("codes: " + ", ".join(f"{c}: {n}" for c, n in tally.codes.most_common()))
        print(f"5xx: {sum(n for s, n in tally.statuses.items() if s >= 500)}, "
              f"hangs: {sum(1 for f in tally.findings if f.startswith('HANG'))}, findings: {len(tally.findings)}"
              + (f", schemathesis exit {st_rc}" if args.schemathesis > 0 else ""))
        for finding in tally.findings[:50]:
            print("FINDING", finding)
        if tally.findings or st_rc:
            print(f"replay: python scripts/fuzz_node.py --seed {seed} --duration {args.duration:.0f}")
            return 1
        return 0
    finally:
        if node is not None:
            if node.proc and node.proc.poll() is not None:
                print("the node exited during the run:\n" + node.stderr())
            node.kill()
        if upstream is not None:
            upstream.__exit__(None, None, None)
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
