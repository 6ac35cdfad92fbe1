"""The frontier answer (GET /v1/peer/frontier, 200 JSON; 204 with no body when in sync).

    {"node": hex32, "origins": [{"origin": hex32, "size": int, "checkpoint": note}],
     "digest": hex, "forks": [evidence], "peers": [url]}

Bounds, checked before or while parsing: the body (FRONTIER_BYTES_MAX), origins
(FRONTIER_ORIGINS_MAX), peer URLs (PEERS_EXCHANGED_MAX kept, each under PEER_URL_CHARS_MAX),
fork evidence records (FORKS_EXCHANGED_MAX). Checkpoints and evidence stay untrusted: they are
checked against the origin's key by the engine (consensus/replication.py, consensus/verify.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from consensus.messages import FORKS_EXCHANGED_MAX, FRONTIER_BYTES_MAX, FRONTIER_ORIGINS_MAX, PEERS_EXCHANGED_MAX
from consensus.peermsg import load_json
from consensus.verify import PeerProtocolError

PEER_URL_CHARS_MAX = 300
ERRORS = ("oversized", "bad_encoding", "bad_frontier")


@dataclass(frozen=True)
class Frontier:
    node: bytes
    origins: tuple[tuple[bytes, int, str], ...]  # (origin, size, untrusted checkpoint note)
    peers: tuple[str, ...] = ()
    forks: tuple[Any, ...] = ()  # untrusted fork evidence (consensus.verify.check_fork_evidence)
    digest: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def to_doc(f: Frontier) -> dict[str, Any]:
    return {"node": f.node.hex(),
            "origins": [{"origin": o.hex(), "size": s, "checkpoint": n} for o, s, n in f.origins],
            "digest": f.digest, "forks": list(f.forks), "peers": list(f.peers)}


def encode(f: Frontier) -> bytes:
    return json.dumps(to_doc(f), separators=(",", ":")).encode()


def decode(body: bytes) -> Frontier:
    """The frontier in untrusted bytes; raises PeerProtocolError (ERRORS)."""
    return from_doc(load_json(body, FRONTIER_BYTES_MAX, "frontier answer"))


def from_doc(doc: Any) -> Frontier:
    """The frontier in an untrusted decoded JSON document; raises PeerProtocolError("bad_frontier")."""
    try:
        node = bytes.fromhex(doc["node"])
        raw_origins = doc["origins"]
        peers = doc.get("peers", [])
        if len(node) != 32 or not isinstance(raw_origins, list) or len(raw_origins) > FRONTIER_ORIGINS_MAX:
            raise ValueError("shape")
        origins = []
        for o in raw_origins:
            key = bytes.fromhex(o["origin"])
            size, note = o["size"], o["checkpoint"]
            if len(key) != 32 or type(size) is not int or size < 0 or not isinstance(note, str):
                raise ValueError("origin entry")
            origins.append((key, size, note))
        if not isinstance(peers, list):
            raise ValueError("peers")
        exchanged = [u for u in peers[:PEERS_EXCHANGED_MAX] if isinstance(u, str) and len(u) < PEER_URL_CHARS_MAX]
        forks = doc.get("forks", [])
        if not isinstance(forks, list) or len(forks) > FORKS_EXCHANGED_MAX:
            raise ValueError("forks")
        digest = doc.get("digest", "")
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise PeerProtocolError("bad_frontier", f"frontier does not parse: {e}") from None
    return Frontier(node, tuple(origins), tuple(exchanged), tuple(forks), digest if isinstance(digest, str) else "")
