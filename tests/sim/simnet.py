"""A seeded network for the simulation: delay, loss, duplication, reordering, partitions.

Each node's Replicator gets a `SimTransport` instead of HTTP. A request travels
to the addressed node after a random delay, is handled there by the same code
the node's aiohttp handlers call (`SimServer`), and the answer travels back.
Between the two, anything a real network does can happen:

- **delay**: each direction independently, uniform in [delay_min, delay_max];
  concurrent requests therefore arrive **reordered**;
- **loss**: the request or the answer is lost; the client sees a timeout after
  `timeout_s`, as aiohttp's total timeout would show it;
- **duplication**: the request is handled twice at the server (the second copy
  after its own delay, its answer dropped);
- **partitions**: a cut link loses everything in both directions; a node that
  is down refuses connections.

All randomness comes from one `random.Random`, so a seed fixes the run.
"""

from __future__ import annotations

import asyncio
import json
import random
from dataclasses import dataclass
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, urlsplit

import cbor2

from consensus.messages import ReplayGuard, check_peer_request
from ledger.errors import LedgerError


@dataclass
class NetParams:
    delay_min_s: float = 0.001
    delay_max_s: float = 0.040
    loss: float = 0.0
    duplication: float = 0.0
    timeout_s: float = 10.0

    @classmethod
    def random(cls, rng: random.Random) -> "NetParams":
        lo = rng.uniform(0.0005, 0.010)
        return cls(delay_min_s=lo, delay_max_s=lo + rng.uniform(0.001, 0.100),
                   loss=rng.choice([0.0, 0.0, 0.02, 0.10]), duplication=rng.choice([0.0, 0.02, 0.10]))


class SimNet:
    def __init__(self, rng: random.Random, params: NetParams):
        self.rng = rng
        self.params = params
        self.servers: dict[str, "Handler"] = {}  # host -> handler of the node up there (absent: down)
        self.cut: set[frozenset[str]] = set()
        self.requests = 0
        self.lost = 0
        self.duplicated = 0

    # -- topology ------------------------------------------------------------------------------

    def partition(self, *groups: list[str]) -> None:
        """Cut every link between hosts of different groups (links inside a group are kept)."""
        for i, g in enumerate(groups):
            for h in groups[i + 1:]:
                for a in g:
                    for b in h:
                        self.cut.add(frozenset((a, b)))

    def heal(self) -> None:
        self.cut.clear()

    def reachable(self, a: str, b: str) -> bool:
        return frozenset((a, b)) not in self.cut

    # -- delivery ------------------------------------------------------------------------------

    def _delay(self) -> float:
        return self.rng.uniform(self.params.delay_min_s, self.params.delay_max_s)

    async def deliver(self, src: str, method: str, url: str, headers: dict[str, str], body: bytes,
                      limit: int) -> tuple[int, bytes | None]:
        self.requests += 1
        host = urlsplit(url).hostname or ""
        await asyncio.sleep(self._delay())
        if not self.reachable(src, host) or self.rng.random() < self.params.loss:
            self.lost += 1
            await asyncio.sleep(self.params.timeout_s)
            raise asyncio.TimeoutError(f"{method} {url}: no answer (lost or cut)")
        handler = self.servers.get(host)
        if handler is None:
            raise ConnectionRefusedError(f"{host} is down")
        if self.rng.random() < self.params.duplication:
            self.duplicated += 1
            asyncio.get_running_loop().create_task(self._duplicate(src, host, method, url, headers, body))
        status, answer = await handler(method, url, headers, body)
        await asyncio.sleep(self._delay())
        if not self.reachable(src, host) or self.rng.random() < self.params.loss:
            self.lost += 1
            await asyncio.sleep(self.params.timeout_s)
            raise asyncio.TimeoutError(f"{method} {url}: answer lost")
        return status, (answer if len(answer) <= limit else None)

    async def _duplicate(self, src: str, host: str, method: str, url: str, headers: dict[str, str], body: bytes) -> None:
        await asyncio.sleep(self._delay())
        handler = self.servers.get(host)
        if handler is not None and self.reachable(src, host):
            try:
                await handler(method, url, headers, body)
            except Exception:  # noqa: BLE001 - a duplicate's fate is nobody's business
                pass


Handler = Callable[[str, str, dict[str, str], bytes], Awaitable[tuple[int, bytes]]]


class SimTransport:
    """node.replication.Transport over a SimNet, for the node at host src."""

    def __init__(self, net: SimNet, src: str):
        self.net, self.src = net, src

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      limit: int) -> tuple[int, bytes | None]:
        return await self.net.deliver(self.src, method, url, headers, body, limit)


class SimServer:
    """The peer and log routes a Replicator calls, over the node's own Replicator and Queries.

    The same calls the aiohttp handlers make (node/api/peer.py, node/api/log.py);
    only the HTTP framing is left out.
    """

    def __init__(self, replicator: Any, queries: Any, clock: Any, skew_ms: int):
        self.replicator, self.queries, self.clock, self.skew_ms = replicator, queries, clock, skew_ms
        self.replays = ReplayGuard(skew_ms, 20_000, floor_ms=clock.now_ms())

    async def __call__(self, method: str, url: str, headers: dict[str, str], body: bytes) -> tuple[int, bytes]:
        parts = urlsplit(url)
        path_qs = parts.path + (f"?{parts.query}" if parts.query else "")
        q = {k: v[0] for k, v in parse_qs(parts.query).items()}
        try:
            if parts.path.startswith("/v1/peer/"):
                signed = check_peer_request(headers, method, path_qs, body, self.clock.now_ms(), self.skew_ms)
                node = signed.node
                if not self.replicator.admitted(node):
                    return 403, b'{"error":"not_authority"}'
                self.replays.check(signed, self.clock.now_ms())
                self.replicator.heard_from(node, signed.advertise)
            if parts.path == "/v1/peer/frontier":
                doc = await self.replicator.frontier_answer(q.get("digest"))
                return (204, b"") if doc is None else (200, json.dumps(doc).encode())
            if parts.path == "/v1/peer/notify":
                digest = json.loads(body).get("digest") if body else None
                await self.replicator.notified(node, signed.advertise, digest)
                return 204, b""
            if parts.path == "/v1/peer/cosign":
                doc = json.loads(body)
                await self.replicator.accept_cosignature(node, doc["size"], doc["line"])
                return 201, b'{"stored":true}'
            if parts.path == "/v1/log/entries":
                doc = await self.queries.entries(int(q["start"]), int(q["end"]), q.get("origin"))
                return 200, cbor2.dumps(doc)
            if parts.path == "/v1/log/proof/consistency":
                doc = await self.queries.consistency(int(q["from"]), int(q["to"]), q.get("origin"))
                return 200, json.dumps(doc).encode()
            return 404, b'{"error":"not_found"}'
        except LedgerError as e:
            return e.status_hint, json.dumps({"error": e.code, "message": e.message}).encode()
