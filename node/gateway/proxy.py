"""The OpenAI-compatible LLM gateway (PROTOCOL.md §6.2, docs/gateway.md): reserve, call, charge.

Theory of operation. A call under /llm/v1 is authenticated by the agent's own EdDSA token
(ledger/credentials.py), bounded and parsed, routed to its model's upstream, and then:

1. its worst case is reserved (node/meter.py): prompt tokens bounded by the bytes of the
   request body (no tokenizer makes more than one token of a byte), plus the output it may
   ask for (max_tokens, or a default, capped). A refusal is the OpenAI 429 and the upstream
   never sees the call;
2. the upstream is called with the node's provider key; its bytes go back to the client as
   sent (a stream event by event), except the usage chunk the node asked for and the client
   did not;
3. what the upstream reports is charged as a node-signed metered event (the reservation is
   settled in the same transaction). An upstream error releases the reservation and passes
   its status and body through; an unreachable upstream is 502 and charges nothing; a
   timeout, a garbled answer or a stream that ends without usage are charged at the
   reservation, because the upstream may have done the work.

Each call runs in its own task, shielded from the request handler: a client that goes away
never cancels the metering. A stream whose client left is read on (at most `llm_drains_max`
at once, each for at most `llm_drain_ms`) to learn its usage; beyond those bounds it is cut
and charged at its reservation.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, AsyncIterator, Awaitable

import aiohttp
from aiohttp import web

from ledger.errors import LedgerError, check, Malformed, NotFound, TooLarge, UpstreamError
from ledger.pricing import format_t, llm_cost_milli
from node.aio import read_at_most
from node.clock import SystemClock
from node.config import Config
from node.gateway.auth import bearer_agent
from node.gateway.errors import from_ledger_error
from node.gateway.dialects import ANTHROPIC, OPENAI, Dialect, StreamTracker
from node.gateway.sse import SseSplitter, Usage
from node.meter import Meter, Reservation, remaining
from node.metrics import NodeMetrics
from node.store.meter import OpenCall

logger = logging.getLogger("ats.gateway")

SSE_EVENT_BYTES_MAX = 1_048_576
# aiohttp >= 3.10 tells a connect timeout apart from a read timeout
_CONNECT_TIMEOUT: Any = getattr(aiohttp, "ConnectionTimeoutError", ())


def _pairs(items: tuple[str, ...]) -> dict[str, str]:
    return {k.strip(): v.strip() for k, _, v in (i.partition("=") for i in items)}


class Gateway:
    """Routes, meters and proxies the calls of one node's /llm/v1 paths."""

    def __init__(self, config: Config, meter: Meter | None, clock: SystemClock, metrics: NodeMetrics | None = None):
        self._config, self._clock = config, clock
        self._metrics = metrics or NodeMetrics(lambda: 0, lambda: 0)
        self.meter = meter  # set by the composition root once storage is open
        self._routes = {m: u.rstrip("/") for m, u in _pairs(config.llm_routes).items()}
        self._keys = _pairs(config.llm_route_keys)
        self._models = frozenset(config.llm_models)
        self._limits: dict[str, tuple[int, int]] = {}  # model -> (context tokens, output tokens)
        for model, caps in _pairs(config.llm_model_limits).items():
            context, output = (c.strip() for c in caps.split(":"))
            self._limits[model] = (int(context or config.llm_context_tokens_max), int(output or config.llm_output_tokens_max))
        self._session: aiohttp.ClientSession | None = None
        self._tasks: set[asyncio.Task] = set()  # calls in flight
        self._charges: set[asyncio.Task] = set()  # charges of answered calls, committing
        self._drains = 0

    # -- lifecycle ---------------------------------------------------------------------------

    async def context(self, app: web.Application) -> AsyncIterator[None]:
        """aiohttp cleanup context: the upstream session; open calls are cut at shutdown (and
        charged at their reservation on the next start, since their rows stay)."""
        timeout = aiohttp.ClientTimeout(total=self._config.llm_timeout_ms / 1000,
                                        sock_connect=self._config.llm_connect_timeout_ms / 1000)
        self._session = aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=256),
                                              auto_decompress=False)
        try:
            yield
        finally:
            for task in list(self._tasks):
                task.cancel()
            if self._tasks:
                await asyncio.gather(*self._tasks, return_exceptions=True)
            if self._charges:  # answered calls: let their charges commit (else: charged at restart)
                await asyncio.wait(list(self._charges), timeout=self._config.shutdown_timeout_ms / 1000)
            await self._session.close()

    @property
    def _m(self) -> Meter:
        check(self.meter is not None, "the gateway serves only once storage is open")
        return self.meter  # type: ignore[return-value]

    @property
    def _client(self) -> aiohttp.ClientSession:
        check(self._session is not None, "the gateway's upstream session is open while it serves")
        return self._session  # type: ignore[return-value]

    def _upstream(self, model: str, dialect: Dialect) -> tuple[str, str]:
        """(base URL, provider key) of a model; raises NotFound(unknown_model)."""
        if self._models and model not in self._models and model not in self._routes:
            raise NotFound("unknown_model", f"model {model[:128]!r} is not served by this gateway")
        if dialect is ANTHROPIC:
            default, key = self._config.llm_anthropic_upstream, self._config.llm_anthropic_upstream_key
        else:
            default, key = self._config.llm_upstream, self._config.llm_upstream_key
        base = self._routes.get(model) or default.rstrip("/")
        if not base:
            raise NotFound("unknown_model", f"model {model[:128]!r} has no {dialect.name} upstream here")
        return base, self._keys.get(model, key)

    # -- requests ----------------------------------------------------------------------------

    def _agent(self, request: web.Request, dialect: Dialect = OPENAI) -> bytes:
        return bearer_agent(dialect.token(request.headers), now_s=self._clock.now_ms() // 1000,
                            lifetime_s_max=self._config.llm_token_lifetime_s_max)

    async def _body(self, request: web.Request) -> tuple[bytes, dict[str, Any]]:
        limit = self._config.llm_body_bytes_max
        if request.content_length is not None and request.content_length > limit:
            raise TooLarge("prompt_too_large", f"request body is over {limit} bytes")
        raw = await request.read()  # in memory already, within body_bytes_max (node.httpserver.request_bounds)
        if len(raw) > limit:
            raise TooLarge("prompt_too_large", f"request body is over {limit} bytes")
        try:
            doc = json.loads(raw)
        except (ValueError, UnicodeDecodeError, RecursionError):
            raise Malformed("invalid_request", "the request body is not JSON") from None
        if type(doc) is not dict:
            raise Malformed("invalid_request", "the request body must be a JSON object")
        if type(doc.get("model")) is not str or not doc["model"]:
            raise Malformed("invalid_request", "model must be a non-empty string")
        if type(doc.get("stream", False)) is not bool:
            # the gateway meters a stream and an answer differently: a value an upstream might read
            # either way (1, "yes", NaN) is refused before anything is reserved or sent
            raise Malformed("invalid_request", "stream must be true or false")
        return raw, doc

    def _bounds(self, model: str) -> tuple[int, int]:
        """(most prompt tokens, most output tokens per choice) a call to this model can use."""
        return self._limits.get(model, (self._config.llm_context_tokens_max, self._config.llm_output_tokens_max))

    async def handle(self, request: web.Request, path: str, dialect: Dialect = OPENAI) -> web.StreamResponse:
        """POST /llm/v1/{chat/completions,embeddings,messages}: the whole metered call, or its error."""
        try:
            agent = self._agent(request, dialect)
            raw, doc = await self._body(request)
            model = doc["model"]
            base, key = self._upstream(model, dialect)
            context_max, output_max = self._bounds(model)
            # no tokenizer makes more than a token of a byte, and no model reads more than its context
            prompt_bound = min(len(raw), context_max)
            stream = doc.get("stream") is True and path != "embeddings"
            out_bound = dialect.out_bound(path, doc, output_max, self._config.llm_max_tokens_default)
            reservation = await self._m.reserve(agent, "llm", model, prompt_bound, out_bound)
        except LedgerError as e:
            self._metrics.gateway_calls.inc(1, e.code)
            return dialect.error(e)
        task = asyncio.create_task(self._call(request, dialect, reservation, base, key, path, doc, raw, stream))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return await asyncio.shield(task)

    async def models(self, request: web.Request) -> web.StreamResponse:
        """GET /llm/v1/models: the default upstream's list, as it sent it."""
        try:
            self._agent(request)
            base = self._config.llm_upstream.rstrip("/") or next(iter(self._routes.values()), "")
            headers = OPENAI.upstream_headers(self._config.llm_upstream_key, {})
            async with self._client.get(f"{base}/models", headers=headers) as resp:
                body = (await read_at_most(resp.content, self._config.llm_response_bytes_max))[: self._config.llm_response_bytes_max]
                return web.Response(status=resp.status, body=body,
                                    content_type=resp.content_type or "application/json")
        except LedgerError as e:
            return from_ledger_error(e)
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as e:
            return from_ledger_error(UpstreamError("upstream_unreachable", f"upstream {base} did not answer: {type(e).__name__}"))

    # -- the call ------------------------------------------------------------------------------

    async def _call(self, request: web.Request, dialect: Dialect, reservation: Reservation, base: str, key: str,
                    path: str, doc: dict[str, Any], raw: bytes, stream: bool) -> web.StreamResponse:
        call = reservation.call
        raw, tracker = dialect.for_upstream(doc, raw, stream)
        try:
            resp = await self._client.post(f"{base}/{path}", data=raw, headers=dialect.upstream_headers(key, request.headers))
        except (aiohttp.ClientConnectorError, _CONNECT_TIMEOUT) as e:  # never connected: the upstream saw nothing
            await self._release(call)
            return dialect.error(UpstreamError("upstream_unreachable", f"upstream {base} is unreachable: {type(e).__name__}"))
        except asyncio.TimeoutError:
            return await self._fail_charged(dialect, call, "upstream_timeout", f"upstream {base} did not answer in time")
        except (aiohttp.ClientError, OSError) as e:  # the request went out, the answer broke off: it may have worked
            return await self._fail_charged(dialect, call, "upstream_bad_response", f"upstream {base} broke off: {type(e).__name__}")
        try:
            if resp.status >= 300:
                return await self._passthrough_error(call, resp)
            if tracker is not None and not resp.content_type.endswith("json"):  # one that ignored "stream" answers whole
                return await self._stream(request, reservation, resp, tracker)
            return await self._whole(dialect, reservation, resp)
        finally:
            resp.release()

    async def _passthrough_error(self, call: OpenCall, resp: aiohttp.ClientResponse) -> web.Response:
        """The upstream refused: nothing was generated, so nothing is charged; its answer goes back as sent."""
        try:
            body = (await read_at_most(resp.content, self._config.llm_response_bytes_max))[: self._config.llm_response_bytes_max]
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError):
            body = b""
        await self._release(call)
        return web.Response(status=resp.status, body=body, headers={"Content-Type": resp.headers.get("Content-Type", "application/json")})

    async def _release(self, call: OpenCall) -> None:
        self._metrics.gateway_calls.inc(1, "released")
        await self._m.release(call)

    async def _charge_reserved(self, call: OpenCall) -> tuple[Any, int]:
        self._metrics.gateway_calls.inc(1, "reservation")
        self._metrics.gateway_cost.inc(call.cost)
        return await self._m.charge_reserved(call)

    async def _fail_charged(self, dialect: Dialect, call: OpenCall, code: str, message: str) -> web.Response:
        """The upstream may have done the work but we cannot know how much: charge the reservation."""
        headers: dict[str, str] = {}
        try:
            outcome, cost = await self._charge_reserved(call)
            headers = self._cost_headers(cost, outcome.receipt or {})
        except LedgerError as e:
            logger.error("call %s not charged now (charged at restart): %s", call.call.hex(), e.message)
        response = dialect.error(UpstreamError(code, f"{message}; charged at the reservation ({format_t(call.cost)} T)"))
        response.headers.update(headers)
        return response

    def _cost_headers(self, cost: int, receipt: dict[str, Any]) -> dict[str, str]:
        headers = {"x-ats-cost-milli": str(cost), "x-ats-cost": format_t(cost)}
        left = remaining(receipt.get("budgets") or [])
        if left is not None:
            headers["x-ats-remaining-milli"] = str(left)
        return headers

    def _charge(self, reservation: Reservation, usage: Usage) -> dict[str, str]:
        """Charge the call in the background (its commit is not on the response's path) and return the
        headers: its cost at the prices it was admitted at, and what remains, as of its admission.

        The response may leave before the charge is committed: the reservation stays held (and in
        SQLite) until then, so concurrent calls still count it, and a node that dies in between
        charges the call at its reservation when it starts again.
        """
        call = reservation.call
        cost = llm_cost_milli(reservation.prices, call.model, usage.tokens_in, usage.tokens_out)
        self._metrics.gateway_calls.inc(1, "charged")
        self._metrics.gateway_cost.inc(cost)
        task = asyncio.create_task(self._charge_now(call, usage))
        self._charges.add(task)
        task.add_done_callback(self._charges.discard)
        headers = {"x-ats-cost-milli": str(cost), "x-ats-cost": format_t(cost), "x-ats-call": call.call.hex()}
        left = reservation.remaining_after(cost)
        if left is not None:
            headers["x-ats-remaining-milli"] = str(max(0, left))
        return headers

    async def _charge_now(self, call: OpenCall, usage: Usage) -> None:
        try:
            await self._m.charge_llm(call, call.model, usage.tokens_in, usage.tokens_out)
        except LedgerError as e:
            logger.error("call %s not charged now (charged at restart): %s", call.call.hex(), e.message)

    async def _whole(self, dialect: Dialect, reservation: Reservation, resp: aiohttp.ClientResponse) -> web.Response:
        call = reservation.call
        limit = self._config.llm_response_bytes_max
        try:
            body = await read_at_most(resp.content, limit)
            if len(body) > limit:
                return await self._fail_charged(dialect, call, "upstream_bad_response", f"upstream answer is over {limit} bytes")
        except asyncio.TimeoutError:
            return await self._fail_charged(dialect, call, "upstream_timeout", "upstream answer did not complete in time")
        except (aiohttp.ClientError, OSError) as e:
            return await self._fail_charged(dialect, call, "upstream_bad_response", f"upstream answer broke off: {type(e).__name__}")
        try:
            usage = dialect.usage(json.loads(body))
        except (ValueError, UnicodeDecodeError, RecursionError):
            usage = None
        if usage is None:
            return await self._fail_charged(dialect, call, "upstream_bad_response",
                                            f"upstream answer is not an {dialect.name} response with usage")
        headers = self._charge(reservation, usage)
        headers["Content-Type"] = resp.headers.get("Content-Type", "application/json")
        return web.Response(status=resp.status, body=body, headers=headers)

    async def _stream(self, request: web.Request, reservation: Reservation,
                      resp: aiohttp.ClientResponse, tracker: StreamTracker) -> web.StreamResponse:
        call, budgets = reservation.call, reservation.budgets
        out = web.StreamResponse(status=resp.status, headers={
            "Content-Type": resp.headers.get("Content-Type", "text/event-stream"),
            "Cache-Control": "no-cache",
            "x-ats-reserved-milli": str(call.cost),
            "x-ats-call": call.call.hex(),
            **({"x-ats-remaining-milli": str(remaining(budgets))} if remaining(budgets) is not None else {}),
        })
        client = await _delivered(out.prepare(request))
        if await self._relay(out, resp, tracker, client):
            await _delivered(out.write_eof())
        usage = tracker.usage if tracker.complete else None
        if usage is not None:
            self._charge(reservation, usage)
            return out
        logger.warning("stream of call %s ended without usage: charged at its reservation", call.call.hex())
        try:
            await self._charge_reserved(call)
        except LedgerError as e:
            logger.error("call %s not charged now (charged at restart): %s", call.call.hex(), e.message)
        return out

    async def _relay(self, out: web.StreamResponse, resp: aiohttp.ClientResponse, tracker: StreamTracker,
                     client: bool) -> bool:
        """Pass the upstream's events to the client while it listens; once it is gone, drain the
        upstream for its usage (bounded in time and in streams drained at once). Returns whether the
        client is still there."""
        splitter = SseSplitter(SSE_EVENT_BYTES_MAX)
        draining = False
        deadline = 0.0
        try:
            async for chunk in resp.content.iter_any():
                for event in splitter.feed(chunk):
                    if tracker.see(event) and client:
                        client = await _delivered(out.write(event))
                if not client and not draining:
                    if self._drains >= self._config.llm_drains_max:
                        break  # too many abandoned streams read at once: cut, charged at reservation
                    draining = True
                    self._drains += 1
                    deadline = self._clock.monotonic_s() + self._config.llm_drain_ms / 1000
                if draining and (tracker.complete or self._clock.monotonic_s() > deadline):
                    break
            rest = splitter.rest()
            if rest and tracker.see(rest) and client:
                await out.write(rest)
        except asyncio.TimeoutError:
            pass  # the upstream hung mid-stream: charged from what it reported, or at reservation
        except (aiohttp.ClientError, OSError, ConnectionError):
            pass
        finally:
            if draining:
                self._drains -= 1
        return client


async def _delivered(write: Awaitable[Any]) -> bool:
    """Await a write to the client: False when the client has gone."""
    try:
        await write
    except (ConnectionError, aiohttp.ClientError, RuntimeError):
        return False
    return True
