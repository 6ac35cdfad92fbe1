"""node/workers.trusted_envelope rebuilds exactly what parse_envelope gives, for every vector kind."""

import json
from pathlib import Path

from ledger.events import parse_envelope
from node.workers import check_items, trusted_envelope
from tests.agentkit import TestAgent

VECTORS = json.loads((Path(__file__).parents[1] / "vectors" / "events.json").read_text())["events"]


def test_trusted_envelope_equals_parse_envelope():
    raws = [bytes.fromhex(v["envelope_hex"]) for v in VECTORS]
    agent = TestAgent()
    raws += [agent.envelope("dat", {"src": bytes(32), "dst": bytes(32), "read": 1, "written": 2, "dur": 3}),
             agent.envelope("cpt", {"node": "n1", "cpu": 0, "gpu": 0, "mem": 1, "jobs": 1})]
    assert check_items(raws) == [None] * len(raws)  # what a worker answers: all parse and verify
    for raw in raws:
        assert trusted_envelope(raw) == parse_envelope(raw)


def test_worker_check_reports_each_error():
    good = bytes.fromhex(VECTORS[0]["envelope_hex"])
    bad_sig = good[:-1] + bytes([good[-1] ^ 1])
    out = check_items([good, bad_sig, b"\x00"])
    assert out[0] is None and out[1][1] == "bad_signature" and out[2][0] in ("Malformed", "Invalid")
