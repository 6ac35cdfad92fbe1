"""Peer requests as a node sends them: signed (consensus/messages.py), bounded, decoded by the
wire modules (consensus/peermsg/). The replication shell (node/replication.py) calls these;
what an answer means is the engine's question (consensus/replication.py)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, Callable, Protocol

import aiohttp

from consensus.messages import NONCE_BYTES, peer_headers
from consensus.peermsg import entries as msg_entries
from consensus.peermsg import proof as msg_proof
from consensus.replication import PeerState, pages
from consensus.verify import PeerProtocolError
from node import replstore
from node.aio import read_bounded

logger = logging.getLogger("ats.replication")

POST_ANSWER_BYTES_MAX = 64 * 1024


class Transport(Protocol):
    """How peer requests travel: HTTP in a node (`HttpTransport`), a seeded network in tests/sim."""

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      limit: int) -> tuple[int, bytes | None]:
        """(status, body), body None if it was larger than limit. Raises OSError/TimeoutError/ClientError."""
        ...


class HttpTransport:
    def __init__(self, session: aiohttp.ClientSession):
        self.session = session

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      limit: int) -> tuple[int, bytes | None]:
        async with self.session.request(method, url, headers=headers, data=body or None) as resp:
            return resp.status, await read_bounded(resp, limit)


class PeerClient:
    """Signed requests to peers over a Transport. `signer()` gives (now_ms, key, seed, advertised
    URL, v1_compat) at the time of each request; `nonce(n)` n fresh random bytes."""

    def __init__(self, signer: Callable[[], tuple[int, bytes, bytes, str | None, bool]],
                 nonce: Callable[[int], bytes], entries_max: int):
        self.transport: Transport | None = None
        self._signer, self._nonce, self._entries_max = signer, nonce, entries_max

    def _headers(self, method: str, path_qs: str, body: bytes) -> dict[str, str]:
        now, key, seed, advertise, v1 = self._signer()
        return peer_headers(method, path_qs, body, now, key, seed, self._nonce(NONCE_BYTES), advertise, v1_compat=v1)

    async def get(self, peer: PeerState, path_qs: str, limit: int, cbor: bool = False) -> bytes | None:
        """The answer's body (None for 204); raises PeerProtocolError("oversized"), RuntimeError (HTTP)."""
        assert self.transport is not None
        headers = self._headers("GET", path_qs, b"")
        if cbor:
            headers["Accept"] = "application/cbor"
        status, body = await self.transport.request("GET", peer.url + path_qs, headers, b"", limit)
        if body is None:
            raise PeerProtocolError("oversized", f"{path_qs.split('?')[0]} answer over {limit} bytes")
        if status == 204:
            return None  # in sync: nothing to say
        if status != 200:
            raise RuntimeError(f"{path_qs.split('?')[0]}: HTTP {status} {body[:200]!r}")
        return body

    async def post(self, peer: PeerState, path: str, doc: dict[str, Any]) -> int:
        assert self.transport is not None
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json", **self._headers("POST", path, body)}
        status, _ = await self.transport.request("POST", peer.url + path, headers, body, POST_ANSWER_BYTES_MAX)
        return status

    async def proof(self, peer: PeerState, origin: bytes, first: int, second: int) -> list[bytes]:
        body = await self.get(peer, f"/v1/log/proof/consistency?origin={origin.hex()}&from={first}&to={second}",
                              msg_proof.PROOF_BYTES_MAX)
        return msg_proof.decode(body or b"")

    async def page(self, peer: PeerState, origin: bytes, start: int, size: int) -> tuple[list[bytes], list[bytes] | None]:
        """Entries [start, ...) of origin from the peer, at most entries_max, and, for a page that
        ends before size (the signed checkpoint's), the consistency proof from its end to size."""
        (_a, end), = pages(start, size, self._entries_max)[:1]
        body = await self.get(peer, f"/v1/log/entries?origin={origin.hex()}&start={start}&end={end}",
                              msg_entries.body_bytes_max(self._entries_max), cbor=True)
        # a peer's CBOR is untrusted like an agent's: bounded before it is built (PROTOCOL.md §2)
        raw = msg_entries.decode(body or b"", end - start, items_max=self._entries_max + msg_entries.ITEMS_SLACK)
        end = start + len(raw)
        return raw, (await self.proof(peer, origin, end, size) if end < size else None)


async def send_anchor(session: "aiohttp.ClientSession | None", sink: str, text: str) -> None:
    """An anchored checkpoint (a note and its cosignatures) to the anchor sink: POSTed to an
    http(s) URL, or appended to a file. A failure is logged, never raised."""
    try:
        if sink.startswith(("http://", "https://")):
            assert session is not None
            async with session.post(sink, data=text.encode(), headers={"Content-Type": "text/plain"}) as resp:
                await resp.read()
        else:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(None, replstore.append_text, sink, text + "\n")
    except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
        logger.warning("anchor sink %s failed: %s", sink, e)
