"""Strict mode on a node: the shell of the escrow engine (consensus/escrow.py) over SQLite and HTTP.

Theory of operation. The protocol's decisions (admit or want, when to ask and for how much,
what to give, pre-staging, window ends) are the pure `consensus.escrow.EscrowEngine`; the rules
of rights are `ledger.escrow`. This module runs what the engine decides:

* `EscrowBook` lives with the budget book on the writer thread. For a strict rule it turns the
  rule's window into a key, computes the key's capacity (hard limit + reserve, from the rules in
  force at the window's start) and this node's account from three durable counters kept in
  `usage_counters` under the rule's metric with a suffix (`@own`, `@given`, `@received`), each
  moved in the same transaction as the record that moves it:

  * `@own`: an event this node admits (its own origin log);
  * `@given`: an `escrow.transfer` this node logs (giver-only, checked spare);
  * `@received`: an `escrow.transfer` to this node, merged from the giver's log.

  What it needs from the budget book is the typed `Book` protocol below (not the whole book).
* `EscrowAgent` (on the event loop) polls the engine's ask schedule, sends the asks
  (`POST /v1/peer/escrow/ask`, consensus/escrow_messages.py) to every other member it knows a URL
  for, wakes replication from a peer that gave (`Pull`), and logs the transfers the engine
  decides (an answer to an ask, pre-staging) through the ordinary ingest path, which pushes
  them to its peers on commit. The clock and the randomness (nonces) are its arguments.
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any, AsyncIterator, Callable, Protocol

import aiohttp
from aiohttp import web

from consensus import escrow_messages as wire
from consensus.escrow import TICK_MS, EscrowEngine, Membership, transfer_event
from consensus.messages import NONCE_BYTES, peer_headers
from ledger import escrow
from ledger.budget import Rule, thresholds
from ledger.constants import NONCE_SIZE
from ledger.errors import Invalid, LedgerError, OverBudget
from ledger.events import Event, make_envelope_bytes, parse_envelope
from ledger.signing import sign
from node import tls

logger = logging.getLogger("ats.escrow")

ASK_PATH = wire.ASK_PATH
ASK_TIMEOUT_S = 2  # a peer cut off by a partition must not hold the next ask round for long
CAPACITIES_MAX = 100_000  # capacities remembered (cleared past it: recomputed from the rules)
Counter = tuple[str, str, str, str, int]  # a usage_counters key


class Book(Protocol):
    """What escrow needs from the budget book (node/budgets.py's BudgetBook), on the writer thread."""

    counters: dict[Counter, int]

    def rules(self, conn: Any, chain: list[tuple[str, str]], at_ms: int) -> list[Rule]: ...

    def consumed(self, conn: Any, key: Counter) -> int: ...

    def local_held(self, key: Counter) -> int: ...


class _Rights:
    """The engine's `RightsView` over the book and one connection (writer thread)."""

    def __init__(self, escrow_book: "EscrowBook", book: Book, conn: Any):
        self._e, self._book, self._conn = escrow_book, book, conn

    def capacity(self, key: escrow.Key) -> int | None:
        return self._e.capacity(self._book, self._conn, key)

    def account(self, key: escrow.Key, capacity: int) -> escrow.Account:
        return self._e.account(self._book, self._conn, key, capacity)

    def held(self, key: escrow.Key) -> int:
        return self._book.local_held(key)


class EscrowBook:
    """Rights of this node in every strict key (writer thread), and its escrow engine."""

    def __init__(self, node_key: bytes, *, strict: tuple[str, ...], members: tuple[bytes, ...],
                 members_next: tuple[bytes, ...] = (), members_from_ms: int = 0, retry_ms: int = 100):
        self.node_key = node_key
        self.strict_specs = frozenset(strict)
        self.membership = Membership.of(members, members_next, members_from_ms)
        self.members_now = self.membership.now
        self.retry_ms = retry_ms
        self.capacities: dict[escrow.Key, int] = {}
        self.engine = EscrowEngine(node_key, self.membership)
        self.on_want: Callable[[], None] | None = None

    @classmethod
    def from_config(cls, config: Any, node_key: bytes) -> "EscrowBook":
        return cls(node_key, strict=config.strict_budgets,
                   members=tuple(bytes.fromhex(k) for k in config.strict_members),
                   members_next=tuple(bytes.fromhex(k) for k in config.strict_members_next),
                   members_from_ms=config.strict_members_from_ms, retry_ms=config.strict_retry_ms)

    def is_strict(self, rule: Rule) -> bool:
        return rule.limit is not None and bool(self.members_now) and (
            rule.metric in self.strict_specs or f"{rule.scope}:{rule.metric}" in self.strict_specs)

    def members(self, start_ms: int) -> tuple[bytes, ...]:
        """The member set of a window: the next set from members_from_ms on, when one is configured."""
        return self.membership.at(start_ms)

    @staticmethod
    def counter(key: escrow.Key, suffix: str) -> Counter:
        scope, scope_id, metric, window, start = key
        return (scope, scope_id, metric + suffix, window, start)

    def capacity(self, book: Book, conn: Any, key: escrow.Key) -> int | None:
        """Hard limit + reserve of the key's rule as in force at the window's start (None: not strict)."""
        cap = self.capacities.get(key)
        if cap is None:
            scope, scope_id, metric, window, start = key
            for rule in book.rules(conn, [(scope, scope_id)], start):
                if rule.metric == metric and rule.window == window and self.is_strict(rule):
                    _soft, hard, reserve = thresholds(rule)
                    cap = hard + reserve
                    break
            if cap is None:
                return None
            if len(self.capacities) > CAPACITIES_MAX:
                self.capacities.clear()
            self.capacities[key] = cap
        return cap

    def account(self, book: Book, conn: Any, key: escrow.Key, capacity: int) -> escrow.Account:
        return escrow.Account(
            share=escrow.share(capacity, self.members(key[4]), self.node_key),
            received=book.consumed(conn, self.counter(key, escrow.RECEIVED)),
            given=book.consumed(conn, self.counter(key, escrow.GIVEN)),
            consumed=book.consumed(conn, self.counter(key, escrow.OWN)),
        )

    def decide(self, book: Book, conn: Any, key: escrow.Key, held: int, amount: int) -> tuple[LedgerError | None, dict]:
        """The strict rule for one key: (refusal or None, the `@own` delta to write if admitted)."""
        capacity = self.capacity(book, conn, key)
        if capacity is None:
            return None, {}
        acct = self.account(book, conn, key, capacity)
        ok, wanted = self.engine.admit(key, acct, held, amount)
        if wanted and self.on_want is not None:
            self.on_want()
        if ok:
            return None, {}
        return OverBudget(
            "no_rights",
            f"this node holds {acct.available(held)} of the rights to {key[2]} of {key[0]} {key[1][:16]} in this"
            f" {key[3]} and needs {amount}: it is asking its peers (strict mode)",
            details={"retry_after_ms": self.retry_ms},
        ), {}

    def give(self, book: Book, conn: Any, ev: Event, held: int) -> dict[Counter, int]:
        """Check this node's own transfer record (holder-only, spare) and return its `@given` delta."""
        b = ev.body
        key = b.key
        capacity = self.capacity(book, conn, key)
        if capacity is None:
            raise Invalid("not_strict", f"{b.metric} of {b.scope} {b.scope_id[:16]} per {b.window} is not a strict budget here")
        acct = self.account(book, conn, key, capacity)
        escrow.check_give(ev.signer, b.to, b.amount, self.members(b.start), acct, held)
        given = self.counter(key, escrow.GIVEN)
        book.counters[given] = acct.given + b.amount
        return {given: b.amount}

    def receive(self, book: Book, conn: Any, ev: Event) -> dict[Counter, int]:
        """A merged transfer: credit it if it is to this node from a member (each event id once)."""
        b = ev.body
        members = self.members(b.start)
        if b.to != self.node_key or ev.signer not in members or self.node_key not in members or b.amount <= 0:
            return {}
        self.capacity(book, conn, b.key)  # known here from now on (GET /v1/escrow lists it)
        received = self.counter(b.key, escrow.RECEIVED)
        book.counters[received] = book.consumed(conn, received) + b.amount
        return {received: b.amount}

    def grant(self, book: Book, conn: Any, asker: bytes, key: escrow.Key, asked: int, held: int, now_ms: int) -> int:
        """How much to give an asking member now (writer thread; the transfer's admission re-checks)."""
        capacity = self.capacity(book, conn, key)
        if capacity is None and asker in self.members(key[4]) and self.node_key in self.members(key[4]):
            raise Invalid("not_strict", f"{key[2]} of {key[0]} {key[1][:16]} per {key[3]} is not a strict budget here")
        acct = self.account(book, conn, key, capacity) if capacity is not None else escrow.Account(0)
        return self.engine.answer_ask(now_ms, asker, key, asked, acct, held)

    def prestage_plan(self, book: Book, conn: Any, now_ms: int) -> list[tuple[escrow.Key, bytes, int]]:
        """In the last tenth of a window: next window's rights this node gives to the members that
        asked it for rights in this one, if it used little of its own share (the engine decides)."""
        return [(g.key, g.to, g.amount) for g in self.engine.prestage(now_ms, _Rights(self, book, conn))]

    def view(self, book: Book, conn: Any, held_of: Callable[[escrow.Key], int]) -> list[dict[str, Any]]:
        out = []
        for key, capacity in sorted(self.capacities.items()):
            acct = self.account(book, conn, key, capacity)
            held = held_of(key)
            out.append({"scope": key[0], "scope_id": key[1], "metric": key[2], "window": key[3], "start": key[4],
                        "capacity": capacity, "members": len(self.members(key[4])), "share": acct.share,
                        "received": acct.received, "given": acct.given, "rights": acct.rights,
                        "consumed": acct.consumed, "held": held, "available": acct.available(held)})
        return out


class EscrowAgent:
    """The event-loop side: runs the engine's asks, pulls and gives (HTTP, the writer, ingest)."""

    def __init__(self, db: Any, book: Any, own: Any, replicator: Any, clock: Any,
                 entropy: Callable[[int], bytes] = os.urandom):
        self._db, self._book, self._own, self._replicator, self._clock = db, book, own, replicator, clock
        self._entropy = entropy  # nonces of peer requests and transfer records
        self.escrow: EscrowBook = book.escrow
        self.engine = self.escrow.engine
        self.ingestor: Any = None  # set by the composition root once built
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None

    async def context(self) -> AsyncIterator[None]:
        """An aiohttp cleanup context: the asking loop lives between startup and cleanup."""
        self._loop = asyncio.get_running_loop()
        self.escrow.on_want = self._notify_threadsafe
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=ASK_TIMEOUT_S),
                                              connector=tls.connector(getattr(self._replicator, "ssl", None)))
        task = asyncio.create_task(self._run(), name="ats-escrow")
        try:
            yield
        finally:
            self.escrow.on_want = None
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
            await self._session.close()

    def _notify_threadsafe(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._wake.set)

    async def _run(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._wake.wait(), TICK_MS / 1000)
            except asyncio.TimeoutError:
                await self._prestage()
                continue
            self._wake.clear()
            now = self._clock.now_ms()
            due = self.engine.asks_due(now)
            if due.next_ms is not None:  # asked a moment ago: the engine keeps it for the next round
                self._loop.call_later(max(0, due.next_ms - now) / 1000, self._wake.set)  # type: ignore[union-attr]
            for ask in due.asks:
                try:
                    await self._ask(ask.key, ask.amount)
                except Exception:  # never let one ask stop the loop
                    logger.exception("asking peers for rights in %s failed", ask.key)

    def _peers(self, key: escrow.Key) -> list[Any]:
        members = set(self.escrow.members(key[4])) - {self._own.public_key}
        # peers not contacted yet (node unknown) are asked too: they check our membership themselves
        return [p for p in list(self._replicator.peers.values())
                if (p.node in members or p.node is None) and p.failures < 5]

    async def _ask(self, key: escrow.Key, need: int) -> None:
        body = wire.encode_ask(wire.Ask(key, need))

        async def one(peer: Any) -> None:
            try:
                assert self._session is not None
                async with self._session.post(peer.url + ASK_PATH, data=body, headers=self._headers(body)) as resp:
                    raw = await _read_bounded(resp, wire.ANSWER_BYTES_MAX + 1) if resp.status == 200 else b""
                answer = wire.decode_answer(raw) if raw else wire.Answer(0)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, LedgerError):
                return
            for pull in self.engine.answered(peer.node, answer.given):
                self._replicator.wake(pull.peer)  # pull from the giver now: spendable once merged

        await asyncio.gather(*(one(p) for p in self._peers(key)))

    def _headers(self, body: bytes) -> dict[str, str]:
        signed = peer_headers("POST", ASK_PATH, body, self._clock.now_ms(), self._own.public_key, self._own.seed,
                              self._entropy(NONCE_BYTES), v1_compat=getattr(self._replicator, "v1_compat", False))
        return {"Content-Type": "application/json", **signed}

    async def _prestage(self) -> None:
        try:
            plan = await self._db.write(lambda c: self.escrow.prestage_plan(self._book, c, self._clock.now_ms()))
            for key, to, amount in plan:
                await self._transfer(key, to, amount)
        except LedgerError as e:
            logger.info("pre-staging next window's rights failed: %s", e.message)

    async def give(self, asker: bytes, key: escrow.Key, asked: int) -> dict[str, Any]:
        """Answer a member's ask: log a transfer of what this node can spare (maybe nothing)."""
        amount = await self._db.write(self._grant, asker, key, asked, self._clock.now_ms())
        if amount <= 0:
            return wire.answer_doc(wire.Answer(0))
        return wire.answer_doc(await self._transfer(key, asker, amount))

    async def _transfer(self, key: escrow.Key, to: bytes, amount: int) -> wire.Answer:
        """Log one escrow.transfer of this node's rights (checked again, and debited, by the writer)."""
        seq = await self._db.write(lambda c: self._book.consumed(c, EscrowBook.counter(key, escrow.GIVEN)))
        raw = transfer_event(key, to, amount, seq, self._own.public_key, self._clock.now_ms(), self._entropy(NONCE_SIZE))
        env = parse_envelope(make_envelope_bytes(raw, sign(raw, self._own.seed)))
        outcome = (await self.ingestor.submit([env], client="escrow"))[0]
        if outcome.error is not None:
            if outcome.error.code in ("insufficient_rights", "no_rights"):
                return wire.Answer(0)  # spent meanwhile
            raise outcome.error
        return wire.Answer(amount, outcome.receipt["id"])

    def _grant(self, conn: Any, asker: bytes, key: escrow.Key, asked: int, now_ms: int) -> int:
        return self.escrow.grant(self._book, conn, asker, key, asked, self._book.local_held(key), now_ms)

    async def view(self) -> dict[str, Any]:
        def run(conn: Any) -> list[dict[str, Any]]:
            return self.escrow.view(self._book, conn, self._book.local_held)

        return {"node": self._own.public_key.hex(), "members": [m.hex() for m in self.escrow.members_now],
                "strict": sorted(self.escrow.strict_specs), "keys": await self._db.write(run)}


async def _read_bounded(resp: aiohttp.ClientResponse, limit: int) -> bytes:
    """At most `limit` bytes of a response body (decode_answer refuses more than its bound)."""
    raw = b""
    while len(raw) < limit:  # bounded: every turn reads at least one byte or stops
        chunk = await resp.content.read(limit - len(raw))
        if not chunk:
            break
        raw += chunk
    return raw


ESCROW_KEY = web.AppKey("escrow", EscrowAgent)
