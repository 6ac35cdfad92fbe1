"""Strict mode: budget rights held in escrow by nodes, so a cluster never overspends.

Theory of operation. A strict budget key is (scope, scope_id, metric, window,
window_start). Its capacity C is what `ledger.budget.evaluate` lets a whole
window spend: the hard limit plus the emergency reserve. C is split into
*rights* among a member set of nodes fixed by configuration (never by a
view-dependent quantity), so every node computes the same split alone:

    share(m)  = C // n, plus 1 for the C % n lowest member keys      (`split`)
    rights(m) = share(m) + received(m) - given(m)                     (`Account`)

A node admits an amount only against its own rights:

    consumed_own + held_own + amount <= rights                          (`admits`)

where consumed_own counts the events in the node's own origin log (the
events it admitted) and held_own the open run reservations it admitted.

Rights move only by `escrow.transfer` records in the *giver's* origin log,
signed by the giver, and the giver debits itself (given += amount) in the
same transaction that logs the record, after checking that it holds the
amount spare (`check_give`; how much to give is the protocol's choice,
`consensus.escrow.grant`). The receiver credits itself when it
merges the giver's log. So:

* each node's counters are changed only by that node (merge never conflicts);
* a transfer is credited at most once (it is one event id in one log) and
  never before it was debited;
* received(m) as m knows it <= the sum of transfers to m that exist, hence
  sum over m of rights(m) as each m knows it <= C, and every node's own
  consumption is <= its rights: sum of consumption <= C, under any partition,
  delay, loss, duplication, reordering or crash.

Everything here is integer arithmetic on values passed in: no I/O, no clock.
The escrow protocol engine (consensus/escrow.py) calls these rules; the node
(node/escrow.py, node/budgets.py) and the simulation (tests/sim/escrow) run
that engine.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Sequence

from ledger.errors import Conflict, Forbidden, Invalid, check
from ledger.bodies import Body, _bytes32, _op, _time_ms, _uint, spec

# metric suffixes of the node's durable escrow counters (usage_counters rows)
OWN = "@own"  # consumed by events in this node's own origin log
GIVEN = "@given"  # rights this node gave away
RECEIVED = "@received"  # rights this node received (transfers to it, merged)

LOW_WATER_PCT = 25  # ask peers when available rights fall below this % of the share
ASK_SHARE_PCT = 100  # ask for at least this % of the share at a time
PRESTAGE_IDLE_PCT = 50  # a node that used less than this % of its share gives next window's spare

Key = tuple[str, str, str, str, int]  # scope, scope_id, metric, window, window_start


def split(capacity: int, members: Sequence[bytes]) -> dict[bytes, int]:
    """The initial share of every member: equal parts, the remainder to the lowest keys."""
    ordered = sorted(set(members))
    return {m: share(capacity, ordered, m) for m in ordered}


def share(capacity: int, members: Sequence[bytes], node: bytes) -> int:
    """This node's initial share (0 for a node outside the member set)."""
    check(capacity >= 0, "a capacity is not negative")
    if node not in members:
        return 0
    ordered = sorted(set(members))
    base, rest = divmod(capacity, len(ordered))
    return base + (1 if ordered.index(node) < rest else 0)


@dataclass
class Account:
    """One node's rights in one strict key, as that node knows them."""

    share: int
    received: int = 0
    given: int = 0
    consumed: int = 0

    @property
    def rights(self) -> int:
        return self.share + self.received - self.given

    def available(self, held: int = 0) -> int:
        """Rights neither consumed nor held by open reservations."""
        return self.rights - self.consumed - held


def admits(account: Account, held: int, amount: int) -> bool:
    """The strict admission rule: may this node add `amount` against the rights it holds?"""
    return account.consumed + held + max(0, amount) <= account.rights


def low_water(account: Account) -> int:
    """Below this many available rights a node asks its peers for more."""
    return max(1, account.share * LOW_WATER_PCT // 100)


def is_low(account: Account, held: int) -> bool:
    return account.available(held) < low_water(account)


def ask_amount(account: Account, need: int) -> int:
    """How much to ask each peer for: what the refused event needs, at least half a share."""
    return max(1, need, account.share * ASK_SHARE_PCT // 100)


def check_give(giver: bytes, to: bytes, amount: int, members: Sequence[bytes], account: Account, held: int) -> None:
    """Raise unless `giver` may give `amount` of this key to `to` now (the holder-only rule)."""
    if giver not in members:
        raise Forbidden("not_member", "only a member of the strict member set holds rights to give")
    if to not in members or to == giver:
        raise Forbidden("not_member", "rights go to another member of the strict member set")
    if amount <= 0:
        raise Invalid("invalid_body", "a transfer moves a positive amount")
    if amount > account.available(held):
        raise Conflict("insufficient_rights", f"giving {amount} would leave {account.available(held) - amount} rights")


def prestage(consumed_prev: int, share_prev: int, available_next: int, asks: dict[bytes, int]) -> list[tuple[bytes, int]]:
    """Before the next window: a node that used little of its share gives next window's rights to
    the members that asked it for rights in this window, in proportion to what they asked.

    Returns [(member, amount)], sorted by member key; empty for a busy node.
    """
    if available_next <= 0 or not asks or consumed_prev * 100 >= share_prev * PRESTAGE_IDLE_PCT:
        return []
    # keep what this node itself used, give the rest away in proportion to the asks
    keep = min(available_next, consumed_prev)
    spare = available_next - keep
    total = sum(asks.values())
    out = []
    for member in sorted(asks):
        amount = spare * asks[member] // total if total else 0
        if amount > 0:
            out.append((member, amount))
    return out


# -- optimistic mode: overspend, debt and settlement --------------------------------------


def overspend(total: int, capacity: int) -> int:
    """How far the union of all origins' events ran past a capacity."""
    return max(0, total - capacity)


def allowance(capacity: int, debt: int) -> int:
    """The capacity of a window that carries the previous window's debt (never negative)."""
    return max(0, capacity - debt)


# -- the transfer record -------------------------------------------------------------------------


@dataclass(frozen=True)
class EscrowTransferBody(Body):
    """A node gives `amount` of its rights in one strict key to another member (its own record)."""

    KIND: ClassVar[str] = "escrow.transfer"
    METRICS: ClassVar[tuple[str, ...]] = ()
    scope: str = spec(_op)
    scope_id: str = spec(_op)
    metric: str = spec(_op)
    window: str = spec(_op)
    start: int = spec(_time_ms)
    to: bytes = spec(_bytes32)
    amount: int = spec(_uint)
    seq: int = spec(_uint)

    @property
    def key(self) -> Key:
        return (self.scope, self.scope_id, self.metric, self.window, self.start)


def transfer_body(key: Key, to: bytes, amount: int, seq: int) -> dict[str, object]:
    """The body of an escrow.transfer record for this key."""
    scope, scope_id, metric, window, start = key
    return {"scope": scope, "scope_id": scope_id, "metric": metric, "window": window, "start": start,
            "to": to, "amount": amount, "seq": seq}
