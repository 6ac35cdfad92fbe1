"""Chaos: SIGKILLed node, PostgreSQL crashed (-m immediate), nats-server SIGKILLed, with events arriving.

Afterwards the rows and messages equal the node's events exactly: 0 lost, 0 duplicated, the
same cost sum. (A longer run: scripts/chaos_export.py.)
"""

import pytest

from tests.export.chaos import run_chaos
from tests.export.servers import NatsServer, PostgresServer

pytestmark = pytest.mark.integration


def test_exports_stay_exact_through_node_postgres_and_nats_crashes(tmp_path):
    pg, nats = PostgresServer().start(), NatsServer().start()
    try:
        report = run_chaos(str(tmp_path), rounds=2, pause_s=1.5, pg=pg, nats=nats)
    finally:
        pg.remove()
        nats.remove()
    assert report.log_events > 200, report
    assert report.exact, report
