"""The sums the store keeps or computes stay exact and inside SQLite's int64 (docs/protocol.md, Amount bounds).

Usage totals are summed as high and low halves so no partial sum overflows; usage counters saturate at
COUNTER_MAX. Checked against Python's unbounded integers on a real SQLite file.
"""

from __future__ import annotations

import random
from pathlib import Path

from ledger.constants import AMOUNT_MAX, COUNTER_MAX
from node.store import budgets as budget_store
from node.store import logs as log_store
from node.store.sqlite import open_database, transaction

SIGNER = bytes(32)


def _insert(conn, rows: list[tuple[str, int, int]]) -> None:
    with transaction(conn):
        conn.execute("INSERT OR IGNORE INTO origins (id, public_key, size) VALUES (1, ?, 0)", (bytes(32),))
        conn.executemany(
            "INSERT INTO entries (origin, idx, event_id, signer, kind, ts, envelope, m0, m1, m2, m3, accepted_ms)"
            " VALUES (1, ?, ?, ?, ?, ?, x'00', ?, ?, 0, 0, 0)",
            [(i, i.to_bytes(32, "big"), SIGNER, kind, 1000 + i, m0, m1) for i, (kind, m0, m1) in enumerate(rows)],
        )


def test_usage_totals_are_exact_where_a_plain_sum_overflows(tmp_path: Path) -> None:
    conn = open_database(str(tmp_path / "ledger.sqlite"))
    rng = random.Random(1)
    # amounts at the bound, and (as an older node could have stored) near 2^62: a plain SUM overflows
    values = [AMOUNT_MAX] * 50 + [2**62, 2**62, 2**62 - 1] + [rng.randrange(AMOUNT_MAX) for _ in range(50)]
    trust = [-AMOUNT_MAX, AMOUNT_MAX, -1, -(2**40) + 1, rng.randrange(-AMOUNT_MAX, AMOUNT_MAX)]
    _insert(conn, [("act", 1, v) for v in values] + [("trt", v, 0) for v in trust])
    totals = {row[0]: row[1:] for row in log_store.usage_totals(conn, SIGNER, 0, 2**63 - 1, None)}
    assert totals["act"] == (len(values), len(values), sum(values), 0, 0)
    assert sum(values) > 2**63 - 1  # what SQLite's own sum() would have refused with "integer overflow"
    assert totals["trt"] == (len(trust), sum(trust), 0, 0, 0)
    conn.close()


def test_usage_counters_saturate_at_counter_max(tmp_path: Path) -> None:
    conn = open_database(str(tmp_path / "ledger.sqlite"))
    key = ("agent", "ab" * 32, "act.cost", "day", 0)
    for delta in (COUNTER_MAX - 5, 10, COUNTER_MAX, 2**70):
        with transaction(conn):
            budget_store.add_counters(conn, {key: delta})
        assert budget_store.counter(conn, key) == COUNTER_MAX or delta == COUNTER_MAX - 5
    with transaction(conn):
        budget_store.add_counters(conn, {key: -COUNTER_MAX})
    assert budget_store.counter(conn, key) == 0
    for _ in range(3):  # rights given away (strict mode) count down, never past -COUNTER_MAX
        with transaction(conn):
            budget_store.add_counters(conn, {key: -(2**70)})
        assert budget_store.counter(conn, key) == -COUNTER_MAX
    conn.close()
