"""What the CBOR bound costs on the ingest path (ledger.encoding.scan), next to what it saves.

    python scripts/bench_cbor_scan.py [--n 20000]

Prints, per typical envelope (an `act` event, as agents send): the time of the head walk over the
envelope and its event, of the whole parse (`parse_envelope`, walk included), and of the Ed25519
signature check, and the walk's share of each; then the time to refuse a 40-level shared-reference
bomb (2^40 leaves expanded) and a cycle. Pure computation, one thread.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cbor2  # noqa: E402

from ledger import encoding  # noqa: E402
from ledger.errors import Malformed  # noqa: E402
from ledger.events import parse_envelope  # noqa: E402
from ledger.signing import verify  # noqa: E402
from tests.agentkit import TestAgent  # noqa: E402
from tests.fuzzkit import shared_ref_bomb  # noqa: E402


def per_call_us(fn, n: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - started) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    n = ap.parse_args().n
    agent = TestAgent(bytes(range(32)))
    env = agent.envelope("act", {"op": "llm.call", "cost": 3200, "units": 1500, "result": bytes(32)})
    event = cbor2.loads(env)["event"]
    parsed = parse_envelope(env)
    scan_us = per_call_us(lambda: (encoding.scan(env), encoding.scan(event)), n)
    parse_us = per_call_us(lambda: parse_envelope(env), n)
    verify_us = per_call_us(lambda: verify(parsed.event.raw, parsed.sig, parsed.event.signer), max(1, n // 4))
    print(f"envelope {len(env)} B (event {len(event)} B), {n} runs")
    print(f"  head walk (envelope + event): {scan_us:6.2f} us")
    print(f"  parse_envelope (walk incl.):  {parse_us:6.2f} us   walk share {scan_us / parse_us:5.1%}")
    print(f"  Ed25519 verify:               {verify_us:6.2f} us   walk / (parse + verify) {scan_us / (parse_us + verify_us):5.1%}")
    for name, data in (("40-level shared-ref bomb", shared_ref_bomb(40)), ("cycle", b"\xd8\x1c\x81\xd8\x1d\x00")):
        started = time.perf_counter()
        try:
            encoding.decode_canonical(data)
        except Malformed as e:
            code = e.code
        print(f"  {name} ({len(data)} B): refused {code} in {(time.perf_counter() - started) * 1e6:.1f} us")


if __name__ == "__main__":
    main()
