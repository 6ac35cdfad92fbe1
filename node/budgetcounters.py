"""The budget book's usage counters in memory (what SQLite holds plus the batch's increments, bounded),
and the view of the book that ledger.bookdecide.decide reads."""

from __future__ import annotations

from typing import TYPE_CHECKING, Iterator

from ledger.book import CounterKey, Run
from ledger.budget import Rule
from ledger.errors import LedgerError
from node.store.sqlite import Connection

if TYPE_CHECKING:
    from node.budgets import BudgetBook

COUNTER_GENERATION_MAX = 200_000  # keys per generation (two at most, plus one batch's uncommitted keys)


class CounterCache(dict):
    """Usage counters as SQLite holds them plus the increments of the batch being decided.

    Two generations: this dict (the young one, read with dict.get on the hot path) and `old`.
    A key is loaded through `BudgetBook.consumed`/`prefetch`, which rotate the generations when
    the young one holds COUNTER_GENERATION_MAX keys: the old one is dropped, except the keys
    written since the last commit (`dirty`: their increments are not in SQLite yet). A commit
    is seen as a change of the connection's `total_changes` at the next event (`settle`)."""

    def __init__(self) -> None:
        super().__init__()
        self.old: dict[CounterKey, int] = {}
        self.dirty: set[CounterKey] = set()
        self.changes = -1  # the connection's total_changes when `dirty` started

    def __setitem__(self, key: CounterKey, value: int) -> None:
        dict.__setitem__(self, key, value)
        self.dirty.add(key)

    def __iter__(self) -> Iterator[CounterKey]:
        yield from list(dict.keys(self))
        yield from list(self.old)

    def settle(self, conn: Connection) -> None:
        """Forget which keys are dirty once the writer committed (or rolled back and reloaded)."""
        changes = conn.total_changes
        if changes != self.changes:
            self.dirty.clear()
            self.changes = changes

    def load(self, key: CounterKey, value: int, generation_max: int = COUNTER_GENERATION_MAX) -> None:
        """Cache a value read from SQLite, rotating the generations when the young one is full."""
        if len(self) >= generation_max:
            young = dict(self)
            # written since the last commit, so not in SQLite yet: kept, whichever generation holds them
            kept = {k: young[k] if k in young else self.old[k] for k in self.dirty}
            dict.clear(self)
            dict.update(self, kept)
            self.old = young
        dict.__setitem__(self, key, value)


class DecideView:
    """The book as ledger.bookdecide reads it (BookView): counters loaded from SQLite on first use."""

    __slots__ = ("book", "conn", "run", "hold_delta", "counters", "run_holds", "call_holds", "buckets", "settled",
                 "strict", "rules", "ts_ms")

    def __init__(self, book: "BudgetBook", conn: Connection | None = None, run: Run | None = None, hold_delta: int = 0):
        self.book, self.conn, self.run, self.hold_delta = book, conn, run, hold_delta
        self.counters = book.counters
        self.run_holds = book.runs.holds
        self.call_holds = book.call_book.holds
        self.buckets = book.policy.buckets
        self.settled = book.settled
        self.strict = bool(book.escrow.members_now)
        self.rules: list[Rule] | None = None  # the event's rules, until its counters are prefetched
        self.ts_ms = 0

    def counter(self, key: CounterKey) -> int:
        if self.rules:  # the event's first miss: every counter its rules read, in one query
            self.book.prefetch(self.conn, self.rules, self.ts_ms)
            self.rules = None
        value = self.book.consumed(self.conn, key)
        self.counters = self.book.counters  # a load may have rotated the generations
        return value

    def is_strict(self, rule: Rule) -> bool:
        return self.book.escrow.is_strict(rule)

    def strict_refusal(self, key: CounterKey, spend: int) -> LedgerError | None:
        local = self.book.local_held(key, self.run, self.hold_delta)
        return self.book.escrow.decide(self.book, self.conn, key, local, spend)[0]
