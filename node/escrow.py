"""Strict mode on a node: rights in escrow (ledger/escrow.py), their counters, and asking peers.

Theory of operation. `EscrowBook` lives with the budget book on the writer
thread. For a strict rule it turns the rule's window into a key, computes the
key's capacity (hard limit + reserve, from the rules in force at the window's
start) and this node's account from three durable counters kept in
`usage_counters` under the rule's metric with a suffix (`@own`, `@given`,
`@received`), each moved in the same transaction as the record that moves it:

* `@own`: an event this node admits (its own origin log);
* `@given`: an `escrow.transfer` this node logs (giver-only, checked spare);
* `@received`: an `escrow.transfer` to this node, merged from the giver's log.

A refusal (`429 no_rights`), or an admission that leaves the node below its
low-water mark, records a *want*; `EscrowAgent` (on the event loop) asks every
other member it knows a URL for (`POST /v1/peer/escrow/ask`), and wakes
replication when a peer gave, so the transfer is merged — and spendable — in
one pull. A peer that is asked logs the transfer through the ordinary ingest
path (`Ingestor.submit`), which pushes it to its peers on commit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any, AsyncIterator, Callable

import aiohttp
from aiohttp import web

from consensus.messages import NONCE_BYTES, peer_headers
from node import tls
from ledger import escrow
from ledger.budget import Rule, thresholds
from ledger.constants import NONCE_SIZE
from ledger.errors import Forbidden, Invalid, LedgerError, OverBudget
from ledger.events import Event, make_envelope_bytes, make_event_bytes, parse_envelope
from ledger.signing import sign
from ledger.windows import window_bounds

logger = logging.getLogger("ats.escrow")

ASK_PATH = "/v1/peer/escrow/ask"
ASK_GAP_MS = 100  # one ask round per key at most this often
TICK_MS = 1_000  # how often the agent looks whether a window is ending (pre-staging)
ASK_TIMEOUT_S = 2  # a peer cut off by a partition must not hold the next ask round for long
WANTS_MAX = 1024  # keys waiting for rights (bounded: the oldest are dropped)


class EscrowBook:
    """Rights of this node in every strict key (writer thread)."""

    def __init__(self, node_key: bytes, *, strict: tuple[str, ...], members: tuple[bytes, ...],
                 members_next: tuple[bytes, ...] = (), members_from_ms: int = 0, retry_ms: int = 100):
        self.node_key = node_key
        self.strict_specs = frozenset(strict)
        self.members_now = tuple(sorted(set(members)))
        self.members_next = tuple(sorted(set(members_next)))
        self.members_from_ms = members_from_ms
        self.retry_ms = retry_ms
        self.capacities: dict[escrow.Key, int] = {}
        self.wants: dict[escrow.Key, int] = {}
        self.on_want: Callable[[], None] | None = None
        self.asks: dict[escrow.Key, dict[bytes, int]] = {}  # asks heard per key: next window's split follows them
        self.prestaged: set[escrow.Key] = set()

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
        if self.members_next and start_ms >= self.members_from_ms:
            return self.members_next
        return self.members_now

    @staticmethod
    def counter(key: escrow.Key, suffix: str) -> tuple[str, str, str, str, int]:
        scope, scope_id, metric, window, start = key
        return (scope, scope_id, metric + suffix, window, start)

    def capacity(self, book: Any, conn: Any, key: escrow.Key) -> int | None:
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
            if len(self.capacities) > 100_000:
                self.capacities.clear()
            self.capacities[key] = cap
        return cap

    def account(self, book: Any, conn: Any, key: escrow.Key, capacity: int) -> escrow.Account:
        return escrow.Account(
            share=escrow.share(capacity, self.members(key[4]), self.node_key),
            received=book.consumed(conn, self.counter(key, escrow.RECEIVED)),
            given=book.consumed(conn, self.counter(key, escrow.GIVEN)),
            consumed=book.consumed(conn, self.counter(key, escrow.OWN)),
        )

    def want(self, key: escrow.Key, need: int) -> None:
        if key not in self.wants and len(self.wants) >= WANTS_MAX:
            self.wants.pop(next(iter(self.wants)))
        self.wants[key] = max(need, self.wants.get(key, 0))
        if self.on_want is not None:
            self.on_want()

    def decide(self, book: Any, conn: Any, key: escrow.Key, held: int, amount: int) -> tuple[LedgerError | None, dict]:
        """The strict rule for one key: (refusal or None, the `@own` delta to write if admitted)."""
        capacity = self.capacity(book, conn, key)
        if capacity is None:
            return None, {}
        acct = self.account(book, conn, key, capacity)
        if not escrow.admits(acct, held, amount):
            self.want(key, escrow.ask_amount(acct, amount))
            return OverBudget(
                "no_rights",
                f"this node holds {acct.available(held)} of the rights to {key[2]} of {key[0]} {key[1][:16]} in this"
                f" {key[3]} and needs {amount}: it is asking its peers (strict mode)",
                details={"retry_after_ms": self.retry_ms},
            ), {}
        after = escrow.Account(acct.share, acct.received, acct.given, acct.consumed + max(0, amount))
        if escrow.is_low(after, held):
            self.want(key, escrow.ask_amount(acct, amount))
        return None, {}

    def give(self, book: Any, conn: Any, ev: Event, held: int) -> dict[tuple[str, str, str, str, int], int]:
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

    def receive(self, book: Any, conn: Any, ev: Event) -> dict[tuple[str, str, str, str, int], int]:
        """A merged transfer: credit it if it is to this node from a member (each event id once)."""
        b = ev.body
        members = self.members(b.start)
        if b.to != self.node_key or ev.signer not in members or self.node_key not in members or b.amount <= 0:
            return {}
        self.capacity(book, conn, b.key)  # known here from now on (GET /v1/escrow lists it)
        received = self.counter(b.key, escrow.RECEIVED)
        book.counters[received] = book.consumed(conn, received) + b.amount
        return {received: b.amount}

    def grant(self, book: Any, conn: Any, asker: bytes, key: escrow.Key, asked: int, held: int) -> int:
        """How much to give an asking member now (writer thread; the transfer's admission re-checks)."""
        if asker not in self.members(key[4]) or self.node_key not in self.members(key[4]):
            raise Forbidden("not_member", "the asking node and this node must both be strict members")
        capacity = self.capacity(book, conn, key)
        if capacity is None:
            raise Invalid("not_strict", f"{key[2]} of {key[0]} {key[1][:16]} per {key[3]} is not a strict budget here")
        heard = self.asks.setdefault(key, {})
        heard[asker] = heard.get(asker, 0) + asked
        return escrow.grant(self.account(book, conn, key, capacity), held, asked)

    def prestage_plan(self, book: Any, conn: Any, now_ms: int) -> list[tuple[escrow.Key, bytes, int]]:
        """In the last tenth of a window: next window's rights this node gives to the members that
        asked it for rights in this one, if it used little of its own share (ledger.escrow.prestage)."""
        plan = []
        for key in sorted(self.asks):
            start, end = window_bounds(key[3], key[4])
            if now_ms >= end:
                del self.asks[key]  # the window is over
                self.prestaged.discard(key)
                continue
            if key in self.prestaged or now_ms < end - (end - start) // 10:
                continue
            self.prestaged.add(key)
            nxt = key[:4] + (end,)
            cap, cap_next = self.capacity(book, conn, key), self.capacity(book, conn, nxt)
            if cap is None or cap_next is None or self.node_key not in self.members(end):
                continue
            acct, nacct = self.account(book, conn, key, cap), self.account(book, conn, nxt, cap_next)
            asks = {m: n for m, n in self.asks[key].items() if m in self.members(end)}
            for to, amount in escrow.prestage(acct.consumed, acct.share, nacct.available(book.local_held(nxt)), asks):
                plan.append((nxt, to, amount))
        return plan

    def view(self, book: Any, conn: Any, held_of: Callable[[escrow.Key], int]) -> list[dict[str, Any]]:
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
    """The event-loop side: asks peers for rights, and gives them when asked."""

    def __init__(self, db: Any, book: Any, own: Any, replicator: Any, clock: Any):
        self._db, self._book, self._own, self._replicator, self._clock = db, book, own, replicator, clock
        self.escrow: EscrowBook = book.escrow
        self.ingestor: Any = None  # set by the composition root once built
        self._wake = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._session: aiohttp.ClientSession | None = None
        self._asked_ms: dict[escrow.Key, int] = {}

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
            wants, self.escrow.wants = self.escrow.wants, {}
            now = self._clock.now_ms()
            due = {k: n for k, n in wants.items() if now - self._asked_ms.get(k, -ASK_GAP_MS) >= ASK_GAP_MS}
            for k in wants.keys() - due.keys():
                self.escrow.wants.setdefault(k, wants[k])  # asked a moment ago: keep for the next round
            if len(wants) > len(due):
                self._loop.call_later(ASK_GAP_MS / 1000, self._wake.set)  # type: ignore[union-attr]
            for key, need in due.items():
                self._asked_ms[key] = now
                try:
                    await self._ask(key, need)
                except Exception:  # never let one ask stop the loop
                    logger.exception("asking peers for rights in %s failed", key)

    async def _ask(self, key: escrow.Key, need: int) -> None:
        members = set(self.escrow.members(key[4])) - {self._own.public_key}
        # peers not contacted yet (node unknown) are asked too: they check our membership themselves
        peers = [p for p in list(self._replicator.peers.values())
                 if (p.node in members or p.node is None) and p.failures < 5]
        doc = {"scope": key[0], "scope_id": key[1], "metric": key[2], "window": key[3], "start": key[4], "amount": need}
        body = json.dumps(doc).encode()

        async def one(peer: Any) -> int:
            try:
                assert self._session is not None
                async with self._session.post(peer.url + ASK_PATH, data=body, headers=self._headers(body)) as resp:
                    answer = await resp.json(content_type=None) if resp.status == 200 else {}
                    given = int(answer.get("given", 0))
                    if given and peer.node is not None:
                        self._replicator.wake(peer.node)  # pull from the giver now: spendable once merged
                    return given
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError, ValueError):
                return 0

        await asyncio.gather(*(one(p) for p in peers))

    def _headers(self, body: bytes) -> dict[str, str]:
        signed = peer_headers("POST", ASK_PATH, body, self._clock.now_ms(), self._own.public_key, self._own.seed,
                              os.urandom(NONCE_BYTES), v1_compat=getattr(self._replicator, "v1_compat", False))
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
        amount = await self._db.write(self._grant, asker, key, asked)
        if amount <= 0:
            return {"given": 0, "id": None}
        return await self._transfer(key, asker, amount)

    async def _transfer(self, key: escrow.Key, to: bytes, amount: int) -> dict[str, Any]:
        """Log one escrow.transfer of this node's rights (checked again, and debited, by the writer)."""
        seq = await self._db.write(lambda c: self._book.consumed(c, EscrowBook.counter(key, escrow.GIVEN)))
        raw = make_event_bytes("escrow.transfer", self._own.public_key, self._clock.now_ms(), os.urandom(NONCE_SIZE),
                               escrow.transfer_body(key, to, amount, seq))
        env = parse_envelope(make_envelope_bytes(raw, sign(raw, self._own.seed)))
        outcome = (await self.ingestor.submit([env], client="escrow"))[0]
        if outcome.error is not None:
            if outcome.error.code in ("insufficient_rights", "no_rights"):
                return {"given": 0, "id": None}  # spent meanwhile
            raise outcome.error
        return {"given": amount, "id": outcome.receipt["id"]}

    def _grant(self, conn: Any, asker: bytes, key: escrow.Key, asked: int) -> int:
        return self.escrow.grant(self._book, conn, asker, key, asked, self._book.local_held(key))

    async def view(self) -> dict[str, Any]:
        def run(conn: Any) -> list[dict[str, Any]]:
            return self.escrow.view(self._book, conn, self._book.local_held)

        return {"node": self._own.public_key.hex(), "members": [m.hex() for m in self.escrow.members_now],
                "strict": sorted(self.escrow.strict_specs), "keys": await self._db.write(run)}


ESCROW_KEY = web.AppKey("escrow", EscrowAgent)
