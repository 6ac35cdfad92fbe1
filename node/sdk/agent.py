"""The agent SDK: sign events and submit them to a node, with safe retries (PROTOCOL.md §3, §5).

Theory of operation. `make_envelope` builds the deterministic CBOR of an event
(ledger.events, which also checks the body against its kind's schema), signs it
with the agent's seed (ledger.signing) and wraps it in an envelope. The event
id is SHA-256 of the event bytes, so an envelope, once made, *is* its identity.

Retrying is safe because of that: a node never counts an id twice, and
resubmitting an envelope it already holds returns the stored receipt with status
`duplicate` (PROTOCOL.md §3 "Replay"). So a client that lost the answer to a
submission resends the *same bytes* — never a re-signed event, whose fresh
nonce would make a new id and could count the work twice. `HttpTransport`
retries connection failures, timeouts and `503` with exponential backoff and
jitter; it never retries any other status (a `4xx` is the node's considered
answer, and a `429` carries `retry_after_s` for the caller to act on).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
from typing import Any, Awaitable, Callable, Mapping

import aiohttp

from ledger.constants import NONCE_SIZE
from ledger.errors import LedgerError
from ledger.events import make_envelope_bytes, make_event_bytes
from ledger.signing import public_key_from_seed, sign
from node.aio import read_bounded
from node.clock import SystemClock
from node.tls import client_ssl, connector
from node.sdk.errors import AtsError, AtsUnreachable, parse_retry_after

BATCH_EVENTS_MAX = 256  # the node's default batch_events_max (node/config.py)
BACKOFF_MS_MAX = 10_000  # no single wait between retries is longer than this
RESPONSE_BYTES_MAX = 16 * 1024 * 1024  # a node's answer is bounded before it is decoded (P6)

# Transient failures: no answer at all, so the request may or may not have been applied.
_TRANSIENT = (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError, asyncio.TimeoutError)


class HttpTransport:
    """One aiohttp session to one node: bounded requests, retries on no-answer and 503.

    Every request sent through it must be idempotent (all of the ATS API is:
    reads, quota checks, and submissions keyed by event id).
    """

    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 10,
        retries: int = 3,
        backoff_ms: int = 100,
        rng: random.Random | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        tls_ca: str = "",
        tls_pins: tuple[str, ...] = (),
    ):
        if retries < 0 or backoff_ms < 0 or timeout_s <= 0:
            raise ValueError("retries and backoff_ms must be >= 0, timeout_s > 0")
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_ms = backoff_ms
        self._rng = rng or random.Random()  # jitter only; P2: an instance, not the module
        self._sleep = sleep
        self._session: aiohttp.ClientSession | None = None
        self.retry_count = 0  # retries made so far, over all requests (for metrics and tests)
        # https URLs: verified against tls_ca (else the system's CAs), or the pinned certificates
        self._ssl = client_ssl(tls_ca, tls_pins)
        self.read_token: str | None = None  # sent as Authorization: Bearer on reads (docs/read-access.md)

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout_s),
                                                  connector=connector(self._ssl))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def delay_s(self, attempt: int, retry_after_s: float | None = None) -> float:
        """Wait before retry number attempt+1: backoff_ms · 2^attempt with equal jitter, capped."""
        base_ms = min(BACKOFF_MS_MAX, self.backoff_ms * (2**attempt))
        wait_ms = base_ms / 2 + self._rng.uniform(0, base_ms / 2)
        if retry_after_s is not None:
            wait_ms = max(wait_ms, min(BACKOFF_MS_MAX, retry_after_s * 1000))
        return wait_ms / 1000

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
        content_type: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, Mapping[str, str]]:
        """(status, body, headers) of the first real answer; raises AtsUnreachable after all retries.

        A 503 is retried; if it persists, it is returned like any other answer.
        """
        headers = {**({"Content-Type": content_type} if content_type else {}), **(headers or {})}
        if self.read_token and method == "GET":
            headers["Authorization"] = f"Bearer {self.read_token}"
        headers = headers or None
        last = ""
        for attempt in range(self.retries + 1):
            retry_after_s = None
            try:
                async with self._client().request(method, self.url + path, params=params, data=data, headers=headers) as resp:
                    body = await read_bounded(resp, RESPONSE_BYTES_MAX)
                    if body is None:
                        raise AtsError("bad_response", f"answer is larger than {RESPONSE_BYTES_MAX} bytes", resp.status)
                    if resp.status != 503 or attempt == self.retries:
                        return resp.status, body, resp.headers
                    retry_after_s = parse_retry_after(resp.headers.get("Retry-After"))
                    last = "503 not ready"
            except _TRANSIENT as e:
                last = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
                if attempt == self.retries:
                    break
            self.retry_count += 1
            await self._sleep(self.delay_s(attempt, retry_after_s))
        raise AtsUnreachable(f"no answer from {self.url}{path} after {self.retries + 1} attempts ({last})")

    async def json(self, method: str, path: str, *, ok: tuple[int, ...] = (200,), **kw: Any) -> Any:
        """The decoded JSON of an answer with a status in `ok`; raises AtsError otherwise."""
        status, body, headers = await self.request(method, path, **kw)
        doc = _decode_json(body)
        if status not in ok:
            raise AtsError.from_response(status, doc, headers.get("Retry-After"))
        if doc is None:
            raise AtsError("bad_response", f"{path} answered {status} without a JSON body", status)
        return doc

    async def text(self, path: str, *, params: Mapping[str, str] | None = None) -> str:
        """The UTF-8 text of a 200 answer to GET path; raises AtsError otherwise."""
        status, body, headers = await self.request("GET", path, params=params)
        if status != 200:
            raise AtsError.from_response(status, _decode_json(body), headers.get("Retry-After"))
        try:
            return body.decode("utf-8")
        except UnicodeDecodeError:
            raise AtsError("bad_response", f"{path} answered with text that is not UTF-8", status) from None


def _decode_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def cbor_array(items: list[bytes]) -> bytes:
    """A definite-length CBOR array (RFC 8949 §4.2.1 shortest head) of already-encoded items."""
    n = len(items)
    if n < 24:
        head = bytes((0x80 | n,))
    elif n < 0x100:
        head = bytes((0x98, n))
    elif n < 0x10000:
        head = bytes((0x99,)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x9A,)) + n.to_bytes(4, "big")
    return head + b"".join(items)


class AgentClient:
    """An agent's client to one node: `async with AgentClient(url, seed) as agent: await agent.submit(...)`.

    Raises AtsError when the node (or the local schema check) refuses, and
    AtsUnreachable when no answer came after `retries` retries.
    """

    def __init__(
        self,
        url: str,
        seed: bytes,
        *,
        timeout_s: float = 10,
        retries: int = 3,
        backoff_ms: int = 100,
        batch_events_max: int = BATCH_EVENTS_MAX,
        rng: random.Random | None = None,
        clock: SystemClock | None = None,
        tls_ca: str = "",
        tls_pins: tuple[str, ...] = (),
    ):
        self._seed = bytes(seed)
        self._public_key = public_key_from_seed(self._seed)
        self._clock = clock or SystemClock()
        self._batch_events_max = max(1, min(batch_events_max, BATCH_EVENTS_MAX))
        self.http = HttpTransport(url, timeout_s=timeout_s, retries=retries, backoff_ms=backoff_ms, rng=rng,
                                  tls_ca=tls_ca, tls_pins=tls_pins)

    async def __aenter__(self) -> AgentClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        await self.http.close()

    @property
    def public_key(self) -> bytes:
        """The agent's identity: its 32-byte Ed25519 public key."""
        return self._public_key

    @property
    def agent_hex(self) -> str:
        return self._public_key.hex()

    # -- signing ---------------------------------------------------------------

    def make_envelope(self, kind: str, body: dict[str, Any], ts: int | None = None) -> bytes:
        """A signed envelope's CBOR bytes; ts in ms (default now); raises AtsError(status=None) on a bad body."""
        ts_ms = self._clock.now_ms() if ts is None else ts
        try:
            event = make_event_bytes(kind, self._public_key, ts_ms, os.urandom(NONCE_SIZE), body)
        except LedgerError as e:  # the same check the node runs: refuse before sending
            raise AtsError(e.code, e.message, None) from None
        return make_envelope_bytes(event, sign(event, self._seed))

    def gateway_token(self, ttl_s: int = 30 * 86_400, jti: str | None = None) -> str:
        """A bearer token for the node's LLM gateway (PROTOCOL.md §6.1), minted offline with this key."""
        from ledger.credentials import mint

        return mint(self._seed, now_s=self._clock.now_ms() // 1000, ttl_s=ttl_s, jti=jti)

    # -- submitting ------------------------------------------------------------

    async def submit(self, kind: str, body: dict[str, Any], ts: int | None = None) -> dict[str, Any]:
        """Sign and submit one event; returns its receipt (status accepted or duplicate)."""
        return await self.submit_envelope(self.make_envelope(kind, body, ts))

    async def submit_envelope(self, envelope: bytes) -> dict[str, Any]:
        """Submit one envelope's bytes (resent unchanged on retry); returns the receipt."""
        return await self.http.json(
            "POST", "/v1/events", ok=(200, 201), data=bytes(envelope), content_type="application/cbor"
        )

    async def submit_batch(self, envelopes: list[bytes]) -> list[dict[str, Any]]:
        """Submit many envelopes, ≤ batch_events_max per request; one receipt or {"error": ...} each, in order."""
        results: list[dict[str, Any]] = []
        for start in range(0, len(envelopes), self._batch_events_max):
            chunk = [bytes(e) for e in envelopes[start : start + self._batch_events_max]]
            doc = await self.http.json(
                "POST", "/v1/events/batch", data=cbor_array(chunk), content_type="application/cbor"
            )
            answers = doc.get("results") if isinstance(doc, dict) else None
            if not isinstance(answers, list) or len(answers) != len(chunk):
                raise AtsError("bad_response", f"batch answer does not hold {len(chunk)} results", 200)
            results.extend(answers)
        return results

    # -- reading ---------------------------------------------------------------

    async def balance(self, agent: str | None = None) -> dict[str, Any]:
        """GET /v1/agents/{agent}/balance (default: this agent)."""
        return await self.http.json("GET", f"/v1/agents/{agent or self.agent_hex}/balance")

    async def usage(
        self, since: int | None = None, until: int | None = None, kind: str | None = None, agent: str | None = None
    ) -> dict[str, Any]:
        """GET /v1/agents/{agent}/usage filtered by since/until (ms) and kind (default: this agent)."""
        params = {k: str(v) for k, v in (("since", since), ("until", until), ("kind", kind)) if v is not None}
        return await self.http.json("GET", f"/v1/agents/{agent or self.agent_hex}/usage", params=params)

    async def quota_check(self, kind: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST /v1/quota/check: would an event of this kind and body be allowed now? Records nothing.

        Byte fields of the body may be bytes or hex; for a run, ask with kind
        "run.reserve" and the node prices the estimate from its pricing table.
        """
        json_body = {k: v.hex() if isinstance(v, bytes) else v for k, v in body.items()}
        doc = {"agent": self.agent_hex, "kind": kind, "body": json_body}
        return await self.http.json(
            "POST", "/v1/quota/check", data=json.dumps(doc).encode(), content_type="application/json"
        )
