"""The HTTP listener: bounded connections, timed-out request heads, JSON for malformed HTTP.

aiohttp's defaults suit a service behind a proxy, not one facing hostile
clients (issue 10, classes 6 and 8):

- an idle or slow connection was kept for `keepalive_timeout` (3630 s), so
  slowloris clients held sockets until the open-files limit stopped `accept()`;
  here the request head must be complete within `http_head_timeout_ms` of the
  connection opening or of the previous response (aiohttp's keep-alive timer
  runs from those moments and closes a connection still waiting for a head);
- one client could make the node read as many bytes as it could send (1 MiB bodies, huge headers,
  in a loop), taking the event loop from every other client; here each client (remote address)
  has a byte rate (`client_bytes_per_s`, bursts up to `body_bytes_max`): past it, its connections
  stop being read until its budget refills;
- nothing bounded the connections; here `NodeSite` answers a connection over
  `connections_max` with a JSON `503 too_many_connections` (the node is full), or one over
  `connections_per_client_max` from one address with `429 too_many_client_connections` (that
  client asks too much), at once, before aiohttp builds anything for it,
  then holds it open (as many as the open-files limit leaves room for, at most 4096) until
  the client closes it or for a second, so a client that reconnects whenever it is closed
  (slowloris) cannot make the node refuse thousands of connections a second; and
  `raise_open_files_limit` lifts RLIMIT_NOFILE's soft limit to the hard one so
  that the bound sits well below it;
- a request the HTTP parser refuses (bad request line, header too long, bad
  chunking) was answered `text/plain` with no code and logged with a traceback
  each time; here `NodeRequestHandler.handle_error` answers the contract's JSON
  (`400 malformed_http`, `400 header_too_large`) and logs nothing above debug.

aiohttp has no public hook for parser errors (aio-libs/aiohttp#3287), so the
handler subclasses its `RequestHandler` and overrides `handle_error`, the method
aiohttp calls to render them; the site passes it to `loop.create_server` as
the protocol factory in place of `runner.server`, with the same arguments.
"""

from __future__ import annotations

import asyncio
import json
import logging
import resource
from http import HTTPStatus
from typing import Any

from aiohttp import web

from ledger.errors import TimedOut, TooLarge
from aiohttp.http_exceptions import HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from node.api.errors import SHOULD_RETRY, error_response

logger = logging.getLogger("ats.http")

BUDGETS_MAX = 4096  # clients' byte budgets kept before the refilled ones are forgotten
FDS_RESERVED = 256  # files and sockets besides client connections: SQLite, peers, webhooks, mDNS
REFUSED_HELD_MAX = 4096  # refused connections held open at once, at most (see held_bound)
REFUSED_HOLD_S = 1.0  # how long a refused connection is held open at most (its 503 says Retry-After: 1)


def raise_open_files_limit() -> int:
    """Raise RLIMIT_NOFILE's soft limit to its hard limit; returns the soft limit now in force."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or hard > soft:
        target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError) as e:
            logger.warning("could not raise the open-files limit from %d to %d: %s", soft, target, e)
    return soft


def connections_bound(configured: int, open_files_soft: int) -> int:
    """The connections to allow: configured, but always FDS_RESERVED below the open-files limit."""
    return max(1, min(configured, open_files_soft - FDS_RESERVED))


def held_bound(connections_max: int, open_files_soft: int) -> int:
    """Refused connections to hold open at once: what the open-files limit leaves after the
    connections and the reserve, at most REFUSED_HELD_MAX (0: each is closed at once)."""
    return max(0, min(REFUSED_HELD_MAX, open_files_soft - FDS_RESERVED - connections_max))


def _json_bytes(status: int, code: str, message: str, extra_headers: str = "") -> bytes:
    body = json.dumps({"error": {"code": code, "message": message}}).encode()
    head = (f"HTTP/1.1 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n{extra_headers}\r\n")
    return head.encode() + body


class NodeRequestHandler(RequestHandler):
    """aiohttp's connection handler, counted per client, with contract-shaped parser errors."""

    __slots__ = ("_site", "_client", "_rate_paused", "_write_stall")

    def __init__(self, site: "NodeSite", **kwargs: Any):
        super().__init__(site.web_server, **kwargs)
        self._site = site
        self._client: str | None = None
        self._rate_paused = False
        self._write_stall: asyncio.TimerHandle | None = None

    def pause_writing(self) -> None:
        # the client is not taking what the node writes (its socket and our buffer are full): a client
        # that never reads would hold this handler, and what it holds (an upstream stream, a page),
        # forever; if it takes nothing more within write_timeout_s, the connection is cut
        super().pause_writing()
        if self._write_stall is None and self._site.write_timeout_s > 0:
            self._write_stall = self._loop.call_later(self._site.write_timeout_s, self._write_stalled)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None

    def _write_stalled(self) -> None:
        self._write_stall = None
        if self.transport is not None:
            self.transport.abort()  # the handler's pending write fails: a gateway stream goes on draining

    def admitted(self, transport: asyncio.BaseTransport, client: str) -> None:
        """The connection's gate (_Gate) admitted it: aiohttp takes it from here."""
        self._client = client
        super().connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._client is not None and data:
            wait_s = self._site.spend(self._client, len(data))
            if wait_s > 0 and not self._rate_paused and self.transport is not None:
                # over its client's byte rate: read nothing more from this connection for a while
                self._rate_paused = True
                self.transport.pause_reading()
                self._loop.call_later(wait_s, self._rate_resume)
        super().data_received(data)

    def _rate_resume(self) -> None:
        self._rate_paused = False
        if not self._reading_paused and not self._buffer_paused:
            self._resume_transport_reading()

    def _resume_transport_reading(self) -> None:
        # aiohttp resumes reading when its own buffers drain (base_protocol flow control); a
        # connection paused for its client's byte rate stays paused until _rate_resume
        if not self._rate_paused:
            super()._resume_transport_reading()

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._write_stall is not None:
            self._write_stall.cancel()
            self._write_stall = None
        if self._client is not None:
            self._site.release(self._client)
            self._client = None
        super().connection_lost(exc)

    def handle_error(self, request: BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        """A parser error (or an error escaping the app) in the contract's JSON shape."""
        if request.writer.output_size > 0:
            raise ConnectionError("the response was already started; cannot send an error")
        if isinstance(exc, LineTooLong) or (isinstance(exc, HttpProcessingError) and "too long" in str(exc).lower()):
            code, text = "header_too_large", "a request line or header is longer than http_header_bytes_max"
        elif status == 400:
            code, text = "malformed_http", f"the request is not valid HTTP/1.1: {_reason(exc, message)}"
        else:
            code, text = "internal", "internal error"
            if isinstance(exc, ConnectionError):  # the client went away: nothing to report
                logger.debug("client %s disconnected", request.remote)
            else:
                logger.error("error outside the application serving %s", request.remote, exc_info=exc)
        if status == 400:
            logger.debug("malformed HTTP from %s: %s", request.remote, exc)
            self._site.malformed += 1
        resp = web.json_response({"error": {"code": code, "message": text}}, status=status)
        resp.force_close()
        return resp


class _Gate(asyncio.Protocol):
    """A new connection's first protocol: counts it (NodeSite.admit) and, if it is one too many,
    answers 503 and closes it before any of aiohttp's machinery (its handler, its HTTP parser) is
    built for it; else hands the transport to a new NodeRequestHandler. A slowloris client reopens
    every connection the node closes, so refusing must cost little (scripts/bench_refusals.py)."""

    __slots__ = ("_site", "_make", "_transport", "_timer")

    def __init__(self, site: "NodeSite", make):
        self._site, self._make = site, make
        self._transport: asyncio.BaseTransport | None = None
        self._timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        peer = transport.get_extra_info("peername")
        client = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        refusal = self._site.admit(client)
        if refusal is None:
            handler = self._make()
            transport.set_protocol(handler)
            handler.admitted(transport, client)
            return
        transport.write(refusal)  # type: ignore[attr-defined]
        if self._site.hold():
            # Held open (unread) until the client closes it, as a client reading `Connection: close`
            # does at once, or for REFUSED_HOLD_S: a client that reconnects whenever the node
            # closes (slowloris) then reconnects once a second, not as fast as it can.
            self._transport = transport
            self._timer = asyncio.get_running_loop().call_later(REFUSED_HOLD_S, transport.close)
        else:
            transport.close()

    def data_received(self, data: bytes) -> None:  # a refused connection's request: ignored
        pass

    def eof_received(self) -> bool:
        return False  # the client closed its side: close ours

    def connection_lost(self, exc: BaseException | None) -> None:
        if self._transport is not None:
            self._transport = None
            self._site.unhold()
            if self._timer is not None:
                self._timer.cancel()


def _reason(exc: BaseException | None, message: str | None) -> str:
    text = (getattr(exc, "message", None) or message or str(exc or "bad request")).splitlines()
    return (text[0] if text else "bad request")[:200]


class NodeSite(web.BaseSite):
    """A TCP listener whose connections are NodeRequestHandlers, bounded in number."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, connections_max: int,
                 per_client_max: int, handler_args: dict[str, Any], bytes_per_s: int, burst_bytes: int,
                 backlog: int = 128, ssl_context: Any = None, held_max: int = 0, write_timeout_ms: int = 0):
        super().__init__(runner, backlog=backlog, ssl_context=ssl_context)
        self.write_timeout_s = write_timeout_ms / 1000  # 0: no bound
        self._rate, self._burst = float(bytes_per_s), float(burst_bytes)
        self._budgets: dict[str, list[float]] = {}  # client -> [bytes it may still send, loop time then]
        self._host, self._port = host, port
        self._connections_max, self._per_client_max = connections_max, per_client_max
        self._handler_args = handler_args
        self._open: dict[str, int] = {}
        self.connections = 0
        self.refused = 0  # connections refused (too_many_connections, too_many_client_connections)
        self.held = 0  # refused connections held open (_Gate)
        self._held_max = held_max
        self.malformed = 0  # requests the HTTP parser refused
        self._refused_logged = 0

    @property
    def name(self) -> str:
        return f"{'https' if self._ssl_context else 'http'}://{self._host}:{self._port}"

    @property
    def web_server(self) -> web.Server:
        assert self._runner.server is not None
        return self._runner.server

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        make = lambda: NodeRequestHandler(self, loop=loop, **self._handler_args)  # noqa: E731
        self._server = await loop.create_server(
            lambda: _Gate(self, make), self._host, self._port,
            backlog=self._backlog, reuse_address=True, ssl=self._ssl_context,
        )

    def admit(self, client: str) -> bytes | None:
        """Count a new connection from client; the bytes of a 503 answer if it is one too many."""
        full = self.connections >= self._connections_max
        if full or self._open.get(client, 0) >= self._per_client_max:
            self.refused += 1
            if self.refused >= 2 * self._refused_logged:  # log 1, 2, 4, 8, ... refusals, not each one
                self._refused_logged = self.refused
                logger.warning("refused %d connections so far (over connections_max %d or %d from one client; "
                               "latest from %s)", self.refused, self._connections_max, self._per_client_max, client)
            if full:  # the node's bound: it is busy, whoever asks
                return _json_bytes(503, "too_many_connections", "this node has too many open connections; retry later",
                                   "Retry-After: 1\r\n")
            # this client's bound (connections it has not closed, or that the node has not seen close
            # because its byte rate paused their reading): the client asks too much, not the node
            return _json_bytes(429, "too_many_client_connections",
                               f"this address holds {self._per_client_max} connections, the most one client may; "
                               "close some or retry later",
                               f"Retry-After: 1\r\nx-should-retry: {SHOULD_RETRY['too_many_client_connections']}\r\n")
        self.connections += 1
        self._open[client] = self._open.get(client, 0) + 1
        return None

    def hold(self) -> bool:
        """Whether one more refused connection may be held open (at most held_max)."""
        if self.held >= self._held_max:
            return False
        self.held += 1
        return True

    def unhold(self) -> None:
        self.held -= 1

    def release(self, client: str) -> None:
        self.connections -= 1
        left = self._open.get(client, 0) - 1
        if left > 0:
            self._open[client] = left
        else:
            self._open.pop(client, None)
            if self.spend(client, 0) == 0 and self._budgets[client][0] >= self._burst:
                del self._budgets[client]  # refilled: forgetting it changes nothing (reconnecting must not refill it)

    def spend(self, client: str, size: int) -> float:
        """Take size bytes from client's budget (a token bucket: bytes_per_s, up to burst_bytes);
        the seconds its connections should stop reading for the budget to be positive again."""
        now = asyncio.get_running_loop().time()
        if client not in self._budgets and len(self._budgets) >= BUDGETS_MAX:  # forget every refilled one
            self._budgets = {c: b for c, b in self._budgets.items() if b[0] + (now - b[1]) * self._rate < self._burst}
        budget = self._budgets.setdefault(client, [self._burst, now])
        budget[0] = min(self._burst, budget[0] + (now - budget[1]) * self._rate) - size
        budget[1] = now
        return -budget[0] / self._rate if budget[0] < 0 else 0.0


LIGHT_BODY_BYTES_MAX = 16 * 1024  # a single envelope (at most ~4.2 KB as CBOR, ~5.7 KB as JSON) fits
# Endpoints whose body is one envelope (or a small JSON estimate): a longer body is refused unread.
ONE_ENVELOPE_PATHS = frozenset({"/v1/events", "/v1/quota/check"})


class HeavyGate:
    """Slots for heavy requests (a body over LIGHT_BODY_BYTES_MAX, or of unknown length): at most
    per_client_max at a time per client (remote address) and total_max in all.

    One client's big batches are then read, parsed, verified and committed one (or a few) at a time
    however many connections it opens, so it cannot take the event loop and the cores from other
    clients' single events; and the bodies held in memory are bounded by total_max ×
    body_bytes_max. Single events never wait here.
    """

    def __init__(self, total_max: int, per_client_max: int):
        self._total = asyncio.Semaphore(total_max)
        self._per_client_max = per_client_max
        self._clients: dict[str, list] = {}  # client -> [semaphore, users]: dropped when unused

    async def __call__(self, client: str, work):
        entry = self._clients.setdefault(client, [asyncio.Semaphore(self._per_client_max), 0])
        entry[1] += 1
        try:
            async with entry[0], self._total:
                return await work()
        finally:
            entry[1] -= 1
            if entry[1] == 0:
                del self._clients[client]


def body_limit(request: web.Request) -> int:
    """The longest body this request's endpoint reads (a longer one is refused 413 unread)."""
    return LIGHT_BODY_BYTES_MAX if request.path in ONE_ENVELOPE_PATHS else request.client_max_size


def request_bounds(timeout_ms: int, gate: HeavyGate):
    """Middleware: a heavy request waits for its client's slot (HeavyGate); then the whole body
    (up to client_max_size) is read within timeout_ms, or 408 body_timeout. Handlers then read the
    body from memory (request.read() returns it again)."""

    async def read_and_handle(request: web.Request, handler):
        length = request.content_length
        limit = body_limit(request)
        if length is not None and length > limit:  # refused before a byte of it is read
            raise TooLarge("body_too_large", f"request body is larger than this endpoint accepts ({limit} bytes)")
        if request.body_exists:
            try:
                await asyncio.wait_for(request.read(), timeout_ms / 1000)
            except asyncio.TimeoutError:
                raise TimedOut("body_timeout", f"the request body did not arrive within http_body_timeout_ms "
                                               f"({timeout_ms} ms)") from None
        return await handler(request)

    @web.middleware
    async def middleware(request: web.Request, handler):
        length = request.content_length
        if request.body_exists and (length is None or length > LIGHT_BODY_BYTES_MAX):
            return await gate(request.remote or "", lambda: read_and_handle(request, handler))
        return await read_and_handle(request, handler)

    return middleware


async def expect_handler(request: web.Request) -> web.StreamResponse | None:
    """Every route's `Expect:` handler (aiohttp runs it before any middleware). `100-continue` is
    answered `100 Continue` only for a body the endpoint would read (a longer one is refused 413 by
    `request_bounds` with nothing read); any other expectation is a JSON `417 expectation_failed`,
    not aiohttp's text/plain one."""
    expect = request.headers.get("Expect", "")
    if expect.lower() != "100-continue":
        return error_response(417, "expectation_failed", f"unknown Expect: {expect[:64]!r} (only 100-continue)")
    length = request.content_length
    if request.version == (1, 1) and (length is None or length <= body_limit(request)):
        await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        request.writer.output_size = 0  # as aiohttp's own handler: the body of the answer starts after it
    return None
