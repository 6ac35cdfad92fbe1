"""The escrow engine (consensus/escrow.py) in milliseconds: the ask schedule, giving, window ends.

The engine is pure: these tests hand it `now_ms`, accounts and answers and read the actions it
returns, with no node, no network and no clock. The whole protocol runs in tests/sim/escrow/.
"""

from __future__ import annotations

from consensus.escrow import (
    ASK_GAP_MS,
    ASKERS_MAX,
    HEARD_MAX,
    WANTS_MAX,
    AskPeers,
    EscrowEngine,
    Give,
    Membership,
    Pull,
)
from ledger.errors import LedgerError
from ledger.escrow import Account, Key
from ledger.windows import HOUR_MS

A, B, C, OUT = (bytes([i]) * 32 for i in (1, 2, 3, 9))
KEY: Key = ("team", "research", "act.cost", "hour", 10 * HOUR_MS)
END = 11 * HOUR_MS


def engine(node: bytes = A) -> EscrowEngine:
    return EscrowEngine(node, Membership.of((C, B, A)))


class View:
    """A RightsView over fixed accounts (what the book would say)."""

    def __init__(self, accounts: dict[Key, Account]):
        self.accounts = accounts

    def capacity(self, key: Key) -> int | None:
        return 300 if key in self.accounts else None

    def account(self, key: Key, capacity: int) -> Account:
        return self.accounts[key]

    def held(self, key: Key) -> int:
        return 0


def test_a_refusal_wants_rights_and_the_ask_goes_out_once_per_gap() -> None:
    e = engine()
    now = KEY[4] + 1000
    assert e.admit(KEY, Account(share=100, consumed=100), 0, 5) == (False, True)
    due = e.asks_due(now)
    assert due.asks == [AskPeers(KEY, 100)] and due.next_ms is None  # a full share, at least the need
    e.admit(KEY, Account(share=100, consumed=100), 0, 150)
    due = e.asks_due(now + ASK_GAP_MS - 1)
    assert due.asks == [] and due.next_ms == now + ASK_GAP_MS  # asked a moment ago: wait for the gap
    assert e.asks_due(now + ASK_GAP_MS).asks == [AskPeers(KEY, 150)]  # the largest need is kept
    assert e.asks_due(now + 5 * ASK_GAP_MS) == e.asks_due(now + 6 * ASK_GAP_MS)  # nothing wanted: nothing asked


def test_an_admission_below_the_low_water_mark_asks_ahead() -> None:
    e = engine()
    assert e.admit(KEY, Account(share=100, consumed=60), 0, 15) == (True, False)  # 25 left: not low
    assert e.admit(KEY, Account(share=100, consumed=60), 10, 5) == (True, False)  # held counts
    assert e.admit(KEY, Account(share=100, consumed=60), 0, 16) == (True, True)  # 24 left < 25 %
    assert e.asks_due(KEY[4]).asks == [AskPeers(KEY, 100)]


def test_a_want_of_a_window_that_ended_is_dropped() -> None:
    e = engine()
    e.admit(KEY, Account(share=10, consumed=10), 0, 1)
    assert e.asks_due(END) == e.asks_due(END + 1)
    assert e.asks_due(END).asks == [] and e.wants == {}


def test_wants_are_bounded() -> None:
    e = engine()
    for i in range(WANTS_MAX + 10):
        e.want(KEY[:4] + (i * HOUR_MS,), 1)
    assert len(e.wants) == WANTS_MAX


def test_giving_follows_the_rules_and_stops_at_the_windows_end() -> None:
    e = engine()
    now = KEY[4] + 5
    assert e.answer_ask(now, B, KEY, 40, Account(share=100), 0) == 40  # idle: all it is asked
    assert e.answer_ask(now, B, KEY, 400, Account(share=100), 0) == 100  # up to all it holds
    assert e.answer_ask(now, B, KEY, 40, Account(share=100, consumed=60), 0) == 20  # busy: half of what is left
    assert e.answer_ask(now, B, KEY, 40, Account(share=100, consumed=59), 0) == 21  # the larger half
    assert e.answer_ask(now, B, KEY, 40, Account(share=100), 30) == 35  # held by runs: busy
    assert e.answer_ask(now, B, KEY, 40, Account(share=100, consumed=100), 0) == 0
    assert e.answer_ask(END, B, KEY, 40, Account(share=100), 0) == 0  # the window is over
    for asker in (OUT,):
        try:
            e.answer_ask(now, asker, KEY, 1, Account(share=100), 0)
            raise AssertionError("a non-member was given rights")
        except LedgerError as err:
            assert err.code == "not_member"


def test_the_last_right_of_a_busy_node_is_given_not_kept() -> None:
    # 1 right left is worth nothing to a node whose events need more: halving it (1 // 2 = 0) kept
    # one right per node out of reach until the window ended (docs/strict.md §3, the endgame)
    e = engine()
    assert e.answer_ask(KEY[4], B, KEY, 30, Account(share=100, consumed=99), 0) == 1
    assert e.answer_ask(KEY[4], B, KEY, 30, Account(share=100, consumed=97), 0) == 2


def test_asks_heard_are_bounded_and_pre_staging_follows_them() -> None:
    e = engine()
    now = KEY[4] + 1
    for i in range(ASKERS_MAX + 5):
        e.members = Membership.of((A, B, C) + tuple(bytes([100, i]) * 16 for i in range(ASKERS_MAX + 5)))
        e.answer_ask(now, bytes([100, i]) * 16, KEY, 1, Account(share=0), 0)
    assert len(e.heard[KEY]) == ASKERS_MAX
    e = engine()
    for i in range(HEARD_MAX + 5):
        e.answer_ask(now, B, KEY[:4] + (KEY[4] + i * HOUR_MS,), 1, Account(share=0), 0)
    assert len(e.heard) == HEARD_MAX
    # an idle node (used 0 of 100) gives next window's rights to who asked, in the window's last tenth
    e = engine()
    e.answer_ask(now, B, KEY, 30, Account(share=100), 0)
    e.answer_ask(now, C, KEY, 10, Account(share=100), 0)
    nxt = KEY[:4] + (END,)
    view = View({KEY: Account(share=100), nxt: Account(share=100)})
    assert e.prestage(END - HOUR_MS // 10 - 1, view) == []  # not yet
    assert e.prestage(END - HOUR_MS // 10, view) == [Give(nxt, B, 75), Give(nxt, C, 25)]
    assert e.prestage(END - 1, view) == []  # once per window
    e.prestage(END, view)
    assert e.heard == {} and e.prestaged == set()  # the window is over: forgotten


def test_a_peer_that_gave_is_pulled_at_once_and_a_crash_forgets_everything_volatile() -> None:
    e = engine()
    assert e.answered(B, 3) == [Pull(B)]
    assert e.answered(B, 0) == [] and e.answered(None, 3) == []
    e.admit(KEY, Account(share=1, consumed=1), 0, 1)
    e.answer_ask(KEY[4], B, KEY, 1, Account(share=1), 0)
    e.crash()
    assert (e.wants, e.asked_ms, e.heard, e.prestaged) == ({}, {}, {}, set())


def test_the_member_set_changes_from_a_future_window() -> None:
    m = Membership.of((B, A), (C, A), from_ms=END)
    assert m.at(KEY[4]) == (A, B) and m.at(END) == (A, C)
    assert Membership.of((B, A)).at(END) == (A, B)
