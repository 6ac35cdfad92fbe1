"""Writes tests/vectors/peer-messages.json: golden bytes of every peer message (consensus/peermsg/),
valid ones with what they decode to, invalid ones with the error code each must raise.

    python tests/vectors/make_peer_message_vectors.py   (deterministic: keys from fixed seeds)
"""

from __future__ import annotations

import json
from pathlib import Path

from consensus.peermsg import cosign, entries, frontier, notify, proof
from ledger import encoding
from ledger.checkpoint import Checkpoint, CheckpointSigner, cosign as cosign_checkpoint, origin_line
from ledger.signing import public_key_from_seed

NODE_SEED, ORIGIN_SEED = bytes([1]) * 32, bytes([2]) * 32
H1, H2 = bytes(range(32)), bytes(range(32, 64))


def build() -> dict:
    node, origin = public_key_from_seed(NODE_SEED), public_key_from_seed(ORIGIN_SEED)
    note = CheckpointSigner(ORIGIN_SEED).sign(2, H1)
    f = frontier.Frontier(node, ((origin, 2, note),), ("http://127.0.0.2:8787",), (), "ab" * 32)
    good_frontier = frontier.encode(f)
    line = cosign_checkpoint(Checkpoint(origin_line(origin), 2, H1), origin_line(node), NODE_SEED, 1_780_000_000).line()
    return {
        "description": __doc__.split("\n")[0],
        "node_seed_hex": NODE_SEED.hex(), "origin_seed_hex": ORIGIN_SEED.hex(),
        "frontier": {
            "valid": [{"name": "one origin, one peer", "hex": good_frontier.hex(),
                       "node": node.hex(), "origins": [[origin.hex(), 2, note]], "peers": ["http://127.0.0.2:8787"]}],
            "invalid": [
                {"name": "not json", "hex": b"{".hex(), "code": "bad_encoding"},
                {"name": "short node key", "hex": b'{"node":"00","origins":[]}'.hex(), "code": "bad_frontier"},
                {"name": "negative size", "hex": json.dumps({"node": node.hex(), "origins": [
                    {"origin": origin.hex(), "size": -1, "checkpoint": note}]}).encode().hex(), "code": "bad_frontier"},
                {"name": "too many forks", "hex": json.dumps({"node": node.hex(), "origins": [],
                                                              "forks": [{}] * 17}).encode().hex(), "code": "bad_frontier"},
                {"name": "peers not a list", "hex": json.dumps({"node": node.hex(), "origins": [],
                                                                "peers": "http://x"}).encode().hex(), "code": "bad_frontier"},
            ],
        },
        "entries": {
            "valid": [{"name": "two entries of two asked", "asked": 2, "hex": entries.encode([b"\xa0", b"\xa1"]).hex(),
                       "entries": ["a0", "a1"]},
                      {"name": "fewer than asked", "asked": 5, "hex": entries.encode([b"\xa0"]).hex(), "entries": ["a0"]}],
            "invalid": [
                {"name": "more than asked", "asked": 1, "hex": entries.encode([b"\xa0", b"\xa1"]).hex(), "code": "bad_range"},
                {"name": "none", "asked": 1, "hex": entries.encode([]).hex(), "code": "bad_range"},
                {"name": "not byte strings", "asked": 1, "hex": encoding.encode({"entries": [1]}).hex(), "code": "bad_entry"},
                {"name": "not cbor", "asked": 1, "hex": "ff", "code": "bad_encoding"},
            ],
        },
        "proof": {
            "valid": [{"name": "two hashes", "hex": proof.encode([H1, H2]).hex(), "proof": [H1.hex(), H2.hex()]},
                      {"name": "empty", "hex": proof.encode([]).hex(), "proof": []}],
            "invalid": [
                {"name": "short hash", "hex": json.dumps({"proof": ["00" * 31]}).encode().hex(), "code": "bad_proof"},
                {"name": "no proof", "hex": b"{}".hex(), "code": "bad_proof"},
                {"name": "not json", "hex": b"[".hex(), "code": "bad_encoding"},
            ],
        },
        "notify": {
            "valid": [{"name": "digest", "hex": notify.encode("ab" * 32).hex(), "digest": "ab" * 32},
                      {"name": "empty body", "hex": "", "digest": None},
                      {"name": "digest not text: ignored", "hex": b'{"digest": 5}'.hex(), "digest": None}],
            "invalid": [{"name": "oversized", "hex": (b" " * (notify.NOTIFY_BYTES_MAX + 1)).hex(), "code": "oversized"}],
        },
        "cosign": {
            "valid": [{"name": "a witness line", "hex": cosign.encode(2, line).hex(), "size": 2, "line": line}],
            "invalid": [
                {"name": "size not a number", "hex": json.dumps({"size": "2", "line": line}).encode().hex(),
                 "code": "malformed_note"},
                {"name": "line not a signature", "hex": json.dumps({"size": 2, "line": "hello"}).encode().hex(),
                 "code": "malformed_note"},
            ],
        },
    }


if __name__ == "__main__":
    path = Path(__file__).with_name("peer-messages.json")
    path.write_text(json.dumps(build(), indent=1) + "\n", encoding="utf-8")
    print(f"wrote {path}")
