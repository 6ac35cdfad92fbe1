"""Events the budget book folds without deciding: replicated from a peer (`observe`) and this node's
own, replayed by `ats verify-db` (`replay_own`). Writer thread, like the book."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from ledger import escrow as escrow_rules
from ledger.book import CounterKey
from ledger.bookdecide import window_at
from ledger.budget import Rule
from ledger.constants import COUNTER_MAX
from ledger.events import Event, charged_agent, is_metered
from ledger.kinds import METERING_KINDS, RUN_KINDS
from node.escrow import EscrowBook
from node.store.sqlite import Connection

if TYPE_CHECKING:
    from node.budgets import BudgetBook

logger = logging.getLogger("ats.budgets")

METERING = METERING_KINDS


def observe(book: "BudgetBook", conn: Connection, ev: Event, now_ms: int, origin: bytes | None = None) -> dict[CounterKey, int]:
    """Fold a replicated event (another origin's, verified, held nowhere yet) into the book.

    Nothing is decided: the origin admitted it. Policy records count only
    when their signer may sign them (a node's records: an admitted node);
    usage is charged to the same counters admission uses. Returns the
    counter deltas to write with the entry.
    """
    if ev.kind == "escrow.transfer":
        return book.escrow.receive(book, conn, ev)  # strict mode: rights given to this node, merged
    if not book.roles.may_sign(ev):
        return {}
    if ev.kind not in METERING and ev.kind not in RUN_KINDS:
        book.fold(ev, local=False)
        return {}
    if ev.kind == "trt":
        book.rated(ev.body.subject)
    metered = is_metered(ev)
    if metered and ev.signer != origin and ev.signer not in book.roles.meters:
        logger.info("replicated %s %s names an agent but its signer is neither its origin nor a meter: not counted",
                    ev.kind, ev.id_hex)
        return {}
    if ev.signer in book.roles.nodes and not metered:
        return {}  # nodes' own trust records are not metered
    if ev.kind in RUN_KINDS:
        book.replay_run(ev, local=False)  # another node's reservation holds its rights, not ours
    deltas: dict[CounterKey, int] = {}
    for key, (_rule, spend) in charged(book, conn, ev).items():
        # the origin admitted it: counted, saturating at the largest counter this node keeps
        before = book.consumed(conn, key)
        book.counters[key] = min(COUNTER_MAX, before + spend)
        deltas[key] = book.counters[key] - before
    return deltas


def charged(book: "BudgetBook", conn: Connection, ev: Event) -> dict[CounterKey, tuple[Rule, int]]:
    """The counters a metered event charges (each once): key -> (its rule, the spend)."""
    consume = book.charges(ev)
    out: dict[CounterKey, tuple[Rule, int]] = {}
    if not consume:
        return out
    # the same cached rule lists admission uses (per agent and metric set), in chain order
    for rule in book.spending_rules(conn, charged_agent(ev), ev.ts, tuple(consume)):
        spend = consume[rule.metric]
        if spend:
            out.setdefault(rule.key + (window_at(rule.window, ev.ts)[0],), (rule, spend))
    return out

def replay_own(book: "BudgetBook", conn: Connection, ev: Event) -> dict[CounterKey, int]:
    """Fold an event of this node's own log (admitted once, now replayed) into the book, and
    return the counter deltas its admission wrote: `ats verify-db` recomputes the counters so.

    The same keys as `admit` (each rule's window holding ev.ts, the spend of its metric, the
    strict `@own` counters) and `escrow.give`'s `@given`, without deciding anything.
    """
    if ev.kind == "escrow.transfer":
        return {EscrowBook.counter(ev.body.key, escrow_rules.GIVEN): ev.body.amount}
    if ev.kind not in METERING:
        book.fold(ev, local=True)
        if ev.kind not in RUN_KINDS:
            return {}
    if ev.kind == "trt":
        book.rated(ev.body.subject)
    if ev.signer == book.node_key and not is_metered(ev):
        return {}  # the node's own trust records are not metered
    deltas: dict[CounterKey, int] = {}
    for key, (rule, spend) in charged(book, conn, ev).items():
        deltas[key] = spend
        if book.enforce and rule.limit is not None and book.escrow.is_strict(rule):
            deltas[EscrowBook.counter(key, escrow_rules.OWN)] = spend
    return deltas
