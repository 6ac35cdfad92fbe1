"""The simulated node of tests/sim/escrow/sim.py: durable logs and counters, and its escrow engine.

A `SimNode` keeps what a real node keeps durably (its own origin log, the prefixes of other
origins' logs it merged, and the counters summed over them, as node/escrow.py keeps them in
`usage_counters`), is the `consensus.escrow.RightsView` its engine reads, and owns that engine
(volatile: a crash resets it). Imports only `ledger`, `consensus` and the standard library.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.escrow import EscrowEngine
from ledger import escrow

WINDOW_MS = 20_000  # the simulation's window ("sim"): short, so a schedule runs in a fraction of a second


class SimFailure(AssertionError):
    pass


def sim_bounds(_window: str, ts_ms: int) -> tuple[int, int]:
    """The simulation's windows: WINDOW_MS long from 0 (the engine's `bounds` argument)."""
    start = ts_ms - ts_ms % WINDOW_MS
    return start, start + WINDOW_MS


@dataclass
class Record:
    """One entry of an origin log."""

    kind: str  # use, reserve, post, transfer
    key: escrow.Key
    amount: int
    to: bytes = b""
    run: int = -1


@dataclass
class SimNode:
    """One node: its durable logs and counters, and its escrow engine (the `RightsView` it reads is this node)."""

    key: bytes
    engine: EscrowEngine
    capacity_of: int
    own: list[Record] = field(default_factory=list)
    merged: dict[bytes, list[Record]] = field(default_factory=dict)  # other origins' log prefixes
    up: bool = True
    # sums over the logs above (derivable from them at any time: what node/escrow.py keeps in
    # usage_counters rows, updated in the transaction that appends or merges the records)
    consumed: dict[escrow.Key, int] = field(default_factory=dict)
    given: dict[escrow.Key, int] = field(default_factory=dict)
    received: dict[escrow.Key, int] = field(default_factory=dict)
    credited: set[tuple[bytes, int]] = field(default_factory=set)  # transfers credited: (giver, index in its log)
    union: dict[escrow.Key, int] = field(default_factory=dict)
    open_runs: dict[int, tuple[escrow.Key, int]] = field(default_factory=dict)
    held_by_key: dict[escrow.Key, int] = field(default_factory=dict)
    cluster: dict[tuple[str, escrow.Key], int] = field(default_factory=dict)  # the checker's view, shared
    poll_at: int | None = None  # when the engine's next poll is scheduled (volatile)
    shares: dict[tuple[int, int], int] = field(default_factory=dict)  # (capacity, window start) -> share

    def log(self, origin: bytes) -> list[Record]:
        return self.own if origin == self.key else self.merged.setdefault(origin, [])

    def _count(self, what: str, key: escrow.Key, amount: int) -> None:
        self.cluster[(what, key)] = self.cluster.get((what, key), 0) + amount

    def append(self, r: Record) -> None:
        """Log one own record and move its counters (one transaction in the node)."""
        self.own.append(r)
        if r.kind in ("use", "post"):
            self.consumed[r.key] = self.consumed.get(r.key, 0) + r.amount
            self.union[r.key] = self.union.get(r.key, 0) + r.amount
            self._count("used", r.key, r.amount)
        if r.kind == "reserve":
            self.open_runs[r.run] = (r.key, r.amount)
            self.held_by_key[r.key] = self.held_by_key.get(r.key, 0) + r.amount
            self._count("held", r.key, r.amount)
        elif r.kind == "post":
            rkey, estimate = self.open_runs.pop(r.run)
            self.held_by_key[rkey] -= estimate
            self._count("held", rkey, -estimate)
        elif r.kind == "transfer":
            self.given[r.key] = self.given.get(r.key, 0) + r.amount
            self._count("given", r.key, r.amount)

    def merge(self, origin: bytes, index: int, r: Record) -> None:
        """Fold one record of another origin, merged for the first time (credited once: its id is new)."""
        if r.kind in ("use", "post"):
            self.union[r.key] = self.union.get(r.key, 0) + r.amount
        elif r.kind == "transfer" and r.to == self.key:
            if (origin, index) in self.credited:
                raise SimFailure(f"transfer {origin.hex()[:8]}#{index} credited twice")
            self.credited.add((origin, index))
            self.received[r.key] = self.received.get(r.key, 0) + r.amount
            self._count("received", r.key, r.amount)

    # the engine's RightsView (consensus.escrow): what the book says

    def capacity(self, key: escrow.Key) -> int | None:
        return self.capacity_of

    def account(self, key: escrow.Key, capacity: int) -> escrow.Account:
        """This node's rights in key, from its durable state."""
        share = self.shares.get((capacity, key[4]))
        if share is None:  # the split is fixed per window: computed once (node/escrow.py caches the capacity)
            share = self.shares[(capacity, key[4])] = escrow.share(capacity, self.engine.members.at(key[4]), self.key)
        return escrow.Account(share=share,
                              received=self.received.get(key, 0), given=self.given.get(key, 0),
                              consumed=self.consumed.get(key, 0))

    def held(self, key: escrow.Key) -> int:
        """Open reservations this node admitted, in key's window."""
        return self.held_by_key.get(key, 0)

    def union_used(self, key: escrow.Key) -> int:
        """Optimistic mode: consumption in key as this node sees the union of logs."""
        return self.union.get(key, 0)
