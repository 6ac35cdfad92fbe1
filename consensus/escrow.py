"""Strict mode's escrow protocol as one pure engine per node: when to ask, whom, how much; what to give.

Theory of operation. The rules of rights (who holds what, the admission rule, how much a holder
may give) are `ledger.escrow`. This engine is the protocol around them: the decisions a node takes
over time, with no I/O and no clock. The node (node/escrow.py) and the simulation
(tests/sim/escrow/) feed it `now_ms`, what the book says (an `Account` and what open runs hold)
and what peers answered, and run the actions it returns:

* `admit`: the admission decision of one strict key. A refusal, or an admission that leaves the
  node below its low-water mark, records a *want* (key -> what to ask each peer for).
* `asks_due(now_ms)`: the ask schedule. Every want whose key was last asked `ASK_GAP_MS` ago or
  more becomes one `AskPeers` action (the shell sends the ask to every other member it knows);
  the others wait, and `next_ms` says when to poll again. A want of a window that has ended is
  dropped: its rights are worth nothing.
* `answer_ask`: an asked member decides what to give (`grant`: all it is asked if it is idle,
  else the larger half of what it has left); it remembers who asked (pre-staging follows the
  asks). Nothing is given for a window that has ended.
* `answered(peer, given)`: a peer gave: `Pull(peer)` merges its log at once, so the transfer is
  spendable one round trip later.
* `prestage(now_ms, view)`: in the last tenth of a window, the next window's rights of an idle
  node go to those who asked it (`ledger.escrow.prestage`), as `Give` actions.

Randomness and time are arguments: this module reads no clock, draws no random numbers; the nonce
of a transfer record is given by the caller (`transfer_event`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol, Sequence

from ledger import escrow
from ledger.errors import Forbidden, check
from ledger.escrow import Account, Key
from ledger.events import make_event_bytes
from ledger.windows import window_bounds

ASK_GAP_MS = 100  # one ask round per key at most this often
TICK_MS = 1_000  # how often the shell polls when nothing happens (pre-staging)
WANTS_MAX = 1024  # keys waiting for rights (bounded: the oldest are dropped)
ASKED_MAX = 4096  # keys whose last ask time is remembered
HEARD_MAX = 1024  # keys whose askers are remembered (pre-staging)
ASKERS_MAX = 64  # askers remembered per key
PRESTAGE_TAIL_PCT = 10  # pre-staging happens in this last % of a window

Bounds = Callable[[str, int], tuple[int, int]]  # (window, ts_ms) -> [start, end)


class RightsView(Protocol):
    """What the engine needs from the budget book, one key at a time (node/escrow.py, the simulation)."""

    def capacity(self, key: Key) -> int | None:
        """Hard limit + reserve of a strict key (None: not strict here)."""

    def account(self, key: Key, capacity: int) -> Account:
        """This node's rights in the key, from its durable counters."""

    def held(self, key: Key) -> int:
        """What open reservations this node admitted hold in the key."""


@dataclass(frozen=True)
class Membership:
    """The strict member set of each window: `now`, or `next` for windows starting at `from_ms` or later."""

    now: tuple[bytes, ...]
    next: tuple[bytes, ...] = ()
    from_ms: int = 0

    @classmethod
    def of(cls, now: Sequence[bytes], next_: Sequence[bytes] = (), from_ms: int = 0) -> "Membership":
        return cls(tuple(sorted(set(now))), tuple(sorted(set(next_))), from_ms)

    def at(self, start_ms: int) -> tuple[bytes, ...]:
        if self.next and start_ms >= self.from_ms:
            return self.next
        return self.now


# -- actions: what the shell runs ----------------------------------------------------------------


@dataclass(frozen=True)
class AskPeers:
    """Send an ask for `amount` rights of `key` to every other member."""

    key: Key
    amount: int


@dataclass(frozen=True)
class Give:
    """Log an escrow.transfer of `amount` rights of `key` to `to` (the book checks and debits it)."""

    key: Key
    to: bytes
    amount: int


@dataclass(frozen=True)
class Pull:
    """Merge `peer`'s log now: it gave us rights."""

    peer: bytes


@dataclass(frozen=True)
class Due:
    """The asks to send now, and when to poll again for the wants that must wait (None: none wait)."""

    asks: list[AskPeers]
    next_ms: int | None


# -- the engine ----------------------------------------------------------------------------------


@dataclass
class EscrowEngine:
    """One node's escrow protocol state (volatile: a crash forgets it, the durable counters are the book's)."""

    node: bytes
    members: Membership
    bounds: Bounds = window_bounds
    wants: dict[Key, int] = field(default_factory=dict)  # key -> what to ask each peer for
    asked_ms: dict[Key, int] = field(default_factory=dict)  # key -> when it was last asked
    heard: dict[Key, dict[bytes, int]] = field(default_factory=dict)  # asks heard per key (pre-staging)
    prestaged: set[Key] = field(default_factory=set)

    def window_end(self, key: Key) -> int:
        return self.bounds(key[3], key[4])[1]

    def is_member(self, start_ms: int, node: bytes | None = None) -> bool:
        return (self.node if node is None else node) in self.members.at(start_ms)

    # admission

    def admit(self, key: Key, account: Account, held: int, amount: int) -> tuple[bool, bool]:
        """The strict rule for one key: (admitted, a want was recorded: wake the asking loop)."""
        amount = max(0, amount)
        if not escrow.admits(account, held, amount):
            self.want(key, escrow.ask_amount(account, amount))
            return False, True
        after = Account(account.share, account.received, account.given, account.consumed + amount)
        if escrow.is_low(after, held):
            self.want(key, escrow.ask_amount(account, amount))
            return True, True
        return True, False

    def want(self, key: Key, need: int) -> None:
        if key not in self.wants and len(self.wants) >= WANTS_MAX:
            self.wants.pop(next(iter(self.wants)))
        self.wants[key] = max(need, self.wants.get(key, 0))

    # the ask schedule

    def asks_due(self, now_ms: int) -> Due:
        """The wants to ask for now; the rest wait for their key's gap (one ask round per ASK_GAP_MS)."""
        asks, next_ms = [], None
        # taken whole first: in the node, admissions (the writer thread) add wants meanwhile
        wants, self.wants = self.wants, {}
        for key, need in wants.items():
            if now_ms >= self.window_end(key):
                continue  # the window is over: its rights are worth nothing
            last = self.asked_ms.get(key)
            if last is not None and now_ms - last < ASK_GAP_MS:
                self.want(key, need)  # kept for the next round
                due = last + ASK_GAP_MS
                next_ms = due if next_ms is None else min(next_ms, due)
                continue
            self.asked_ms.pop(key, None)
            self.asked_ms[key] = now_ms
            asks.append(AskPeers(key, need))
        _bound(self.asked_ms, ASKED_MAX)
        return Due(asks, next_ms)

    def answered(self, peer: bytes | None, given: int) -> list[Pull]:
        """A peer answered an ask: pull from it at once if it gave (the transfer is in its log)."""
        return [Pull(peer)] if given > 0 and peer is not None else []

    # giving

    def answer_ask(self, now_ms: int, asker: bytes, key: Key, asked: int, account: Account, held: int) -> int:
        """How much to give an asking member now (the book re-checks the transfer when it is logged)."""
        start = key[4]
        if not self.is_member(start, asker) or not self.is_member(start):
            raise Forbidden("not_member", "the asking node and this node must both be strict members")
        if now_ms >= self.window_end(key):
            return 0  # the window is over: nothing to give
        if key not in self.heard and len(self.heard) >= HEARD_MAX:
            self.heard.pop(next(iter(self.heard)))
        heard = self.heard.setdefault(key, {})
        if asker in heard or len(heard) < ASKERS_MAX:
            heard[asker] = heard.get(asker, 0) + asked
        return grant(account, held, asked)

    def prestage(self, now_ms: int, view: RightsView) -> list[Give]:
        """In the last tenth of a window: next window's rights this node gives to the members that
        asked it for rights in this one, if it used little of its own share (ledger.escrow.prestage)."""
        plan: list[Give] = []
        for key in sorted(self.heard):
            start, end = self.bounds(key[3], key[4])
            if now_ms >= end:
                del self.heard[key]  # the window is over
                self.prestaged.discard(key)
                continue
            if key in self.prestaged or now_ms < end - (end - start) * PRESTAGE_TAIL_PCT // 100:
                continue
            self.prestaged.add(key)
            plan += self._prestage_key(key, end, view)
        return plan

    def _prestage_key(self, key: Key, end: int, view: RightsView) -> list[Give]:
        nxt = key[:4] + (end,)
        cap, cap_next = view.capacity(key), view.capacity(nxt)
        if cap is None or cap_next is None or not self.is_member(end):
            return []
        acct, nacct = view.account(key, cap), view.account(nxt, cap_next)
        members = self.members.at(end)
        asks = {m: n for m, n in self.heard[key].items() if m in members and m != self.node}
        spare = nacct.available(view.held(nxt))
        return [Give(nxt, to, amount) for to, amount in escrow.prestage(acct.consumed, acct.share, spare, asks)]

    def crash(self) -> None:
        """Forget everything volatile (a restart): pending wants, ask times, asks heard."""
        self.wants.clear()
        self.asked_ms.clear()
        self.heard.clear()
        self.prestaged.clear()


def grant(account: Account, held: int, asked: int) -> int:
    """How much an asked holder gives; never more than it holds spare.

    A node that has spent nothing of this key gives all it is asked, up to all it holds. A node
    with demand of its own gives at most the larger half of what it has available (rounded up),
    so the last rights of a window end up split between the nodes that still have demand instead
    of sitting with one of them, and a last odd right is given, not kept: rounded down, every busy
    node kept a remainder of 1 (1 // 2 = 0 to give), too small for its own next event, and the
    end of a window left one right per busy node out of reach (docs/strict.md §3, the endgame).
    """
    available = account.available(held)
    if asked <= 0 or available <= 0:
        return 0
    if account.consumed == 0 and held == 0:
        return min(asked, available)
    return min(asked, (available + 1) // 2)


def _bound(d: dict, limit: int) -> None:
    while len(d) > limit:
        d.pop(next(iter(d)))


def transfer_event(key: Key, to: bytes, amount: int, seq: int, signer: bytes, ts_ms: int, nonce: bytes) -> bytes:
    """The raw bytes of this node's escrow.transfer record (sign them, then log them); nonce: 16 random bytes."""
    check(amount > 0, "a transfer moves a positive amount")
    return make_event_bytes("escrow.transfer", signer, ts_ms, nonce, escrow.transfer_body(key, to, amount, seq))
