"""Exporters against real servers: what lands in PostgreSQL and on JetStream, once; a sink that is down."""

from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal

import pytest

from ledger.checkpoint import open_checkpoint
from ledger.merkle import Frontier, leaf_hash
from tests.agentkit import TestAgent
from tests.export.helpers import (
    acts, caught_up, export_views, ledger_entries, messages, own_entries, pg_rows, submit, summary, wait_for,
)
from tests.integration.http import get

pytestmark = pytest.mark.integration


class Webhook:
    """A loopback HTTP server that keeps every JSON body POSTed to it (the alert webhook)."""

    def __init__(self) -> None:
        import http.server
        import json
        import threading

        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)


def _registered(node_url: str, authority: TestAgent, agent: TestAgent, team: str, user: bytes) -> None:
    body = {"agent": agent.public_key, "user": user, "team": team, "platform": "web", "plan": "freemium"}
    assert submit(node_url, [authority.envelope("agent.register", body)]) == 1


def test_events_land_once_in_postgres_and_jetstream_with_scopes_checkpoints_and_billing(make_node, pg_url, nats_url):
    authority, alice, bob = TestAgent(), TestAgent(), TestAgent()
    node = make_node(env={"ATS_EXPORT_POSTGRES": pg_url, "ATS_EXPORT_NATS": nats_url, "ATS_BUDGETS": "false",
                          "ATS_AUTHORITIES": authority.public_key.hex()}).start()
    _registered(node.url, authority, alice, "ops", b"\x01" * 32)
    assert submit(node.url, acts(alice, 40)) == 40
    assert submit(node.url, acts(bob, 25, cost=700)) == 25
    dat = bob.envelope("dat", {"src": b"\x02" * 32, "dst": b"\x03" * 32, "read": 4096, "written": 10, "dur": 3})
    assert submit(node.url, [dat]) == 1
    wait_for("both sinks caught up", lambda: caught_up(node.url, ("postgres", "nats")))

    log = own_entries(node.data_dir, node.origin)
    ids = sorted(e[2] for e in log)
    # PostgreSQL: one row per event, its place in the log, the raw envelope, scopes and costs
    rows = pg_rows(pg_url, "SELECT event_id, origin, idx, kind, envelope, team, cost_mt FROM ats_events")
    assert sorted(r[0] for r in rows) == ids and len(rows) == len(log)
    by_id = {r[0]: r for r in rows}
    for origin, idx, eid, kind, env in log:
        assert by_id[eid][1:5] == (origin, idx, kind, env)
    assert pg_rows(pg_url, "SELECT origin, idx, event_id FROM ats_log_entries ORDER BY idx") == \
        [(o, i, e) for o, i, e, _k, _env in log]
    alice_cost = sum(1500 + i for i in range(40))
    bob_cost = sum(700 + i for i in range(25))
    assert {r[5] for r in rows if r[3] == "act"} == {"ops", None}
    assert pg_rows(pg_url, "SELECT team, events, cost_t FROM ats_cost_team_day ORDER BY team NULLS LAST") == [
        ("ops", 40, Decimal(alice_cost) / 1000), (None, 25, Decimal(bob_cost) / 1000)]
    assert pg_rows(pg_url, "SELECT sum(cost_mt) FROM ats_billing_month")[0][0] == alice_cost + bob_cost
    assert pg_rows(pg_url, "SELECT agent, units FROM ats_billing_day WHERE team = 'ops'") == [
        (alice.public_key.hex(), sum(10 + i for i in range(40)))]
    # the checkpoints: the latest one is the node's, and the rows hash to its leaves
    note = get(node.url, "/v1/log/checkpoint").body.decode()
    assert pg_rows(pg_url, "SELECT note FROM ats_checkpoints ORDER BY size DESC LIMIT 1")[0][0] == note
    assert pg_rows(pg_url, "SELECT next_index FROM ats_export_positions")[0][0] == len(log)
    # an auditor's check: the exported envelopes, in log order, give the signed root of every checkpoint
    envelopes = [r[0] for r in pg_rows(pg_url, "SELECT e.envelope FROM ats_log_entries l JOIN ats_events e"
                                               " USING (event_id) WHERE l.origin = $1 ORDER BY l.idx", log[0][0])]
    for size, note in pg_rows(pg_url, "SELECT size, note FROM ats_checkpoints WHERE origin = $1", log[0][0]):
        cp, _ = open_checkpoint(note, log[0][0])  # signed by the origin
        tree = Frontier()
        for env in envelopes[:size]:
            tree.append(leaf_hash(env))
        assert (cp.size, cp.root) == (size, tree.root())

    # JetStream: one message per event, id = event id, body = envelope, subject per origin and kind
    msgs = messages(nats_url)
    assert len(msgs) == len(log)
    for m, (origin, idx, eid, kind, env) in zip(msgs, log):
        assert m["subject"] == f"ats.events.{origin.hex()}.{kind}"
        assert m["headers"]["Nats-Msg-Id"] == eid.hex() and m["data"] == env
        s = summary(m)
        assert (s["index"], s["kind"], s["origin"]) == (idx, kind, origin.hex())
    costs = [summary(m)["cost_mt"] for m in msgs]
    assert sum(costs) == alice_cost + bob_cost
    assert {summary(m)["team"] for m in msgs if summary(m)["agent"] == alice.public_key.hex()} == {"ops"}

    metrics = get(node.url, "/metrics").body.decode()
    assert 'ats_export_backlog_events{sink="postgres"} 0' in metrics
    assert f'ats_export_events_total{{sink="nats"}} {len(log)}' in metrics


def test_a_sink_that_is_down_leaves_admission_alone_and_its_backlog_drains_when_it_returns(make_node, tmp_path):
    from tests.export.servers import NatsServer

    nats = NatsServer()  # its port is chosen, nothing listens yet
    hook = Webhook()
    try:
        agent = TestAgent()
        node = make_node(env={"ATS_EXPORT_NATS": nats.url, "ATS_BUDGETS": "false", "ATS_EXPORT_ALERT_EVENTS": "50",
                              "ATS_EXPORT_RETRY_MS_MAX": "500", "ATS_ALERT_WEBHOOKS": hook.url}).start()
        for _ in range(4):
            assert submit(node.url, acts(agent, 30)) == 30  # admission goes on while the sink is down
        wait_for("errors counted", lambda: export_views(node.url)["nats"]["errors"] >= 2)
        view = export_views(node.url)["nats"]
        assert view["up"] is False and view["backlog_events"] == 120 and view["alerting"] is True
        assert view["backlog_age_ms"] > 0
        metrics = get(node.url, "/metrics").body.decode()
        assert 'ats_export_backlog_events{sink="nats"} 120' in metrics and 'ats_export_up{sink="nats"} 0' in metrics
        promtool = shutil.which("promtool")
        assert promtool, "promtool is missing: install the Debian package `prometheus` (apt-get install prometheus)"
        check = subprocess.run([promtool, "check", "metrics"], input=metrics.encode(), capture_output=True, timeout=60)
        assert check.returncode == 0, check.stderr.decode() + check.stdout.decode()
        nats.start()
        wait_for("backlog drained", lambda: caught_up(node.url, ("nats",)), 20)
        msgs = messages(nats.url)
        log = own_entries(node.data_dir, node.origin)
        assert [m["headers"]["Nats-Msg-Id"] for m in msgs] == [e[2].hex() for e in log]
        assert export_views(node.url)["nats"]["alerting"] is False

        def exported_alerts() -> list[dict]:
            return [a for a in hook.received if a["type"].startswith("export_")]

        wait_for("both alerts delivered",
                 lambda: [a["type"] for a in exported_alerts()] == ["export_backlog", "export_caught_up"])
        fired = exported_alerts()[0]
        assert fired["metric"] == "export.nats" and fired["detail"]["backlog_events"] >= 50
        assert fired["node"] == node.origin
    finally:
        hook.close()
        nats.remove()


def test_a_restarted_node_resumes_where_the_sinks_are_without_resending(make_node, pg_url, nats_url):
    agent = TestAgent()
    env = {"ATS_EXPORT_POSTGRES": pg_url, "ATS_EXPORT_NATS": nats_url, "ATS_BUDGETS": "false"}
    node = make_node(env=env).start()
    submit(node.url, acts(agent, 50))
    wait_for("caught up", lambda: caught_up(node.url, ("postgres", "nats")))
    node.restart()
    submit(node.url, acts(agent, 10))
    wait_for("caught up after restart", lambda: caught_up(node.url, ("postgres", "nats")))
    log = own_entries(node.data_dir, node.origin)
    assert len(log) == 60
    assert pg_rows(pg_url, "SELECT count(*), count(DISTINCT event_id) FROM ats_events")[0] == (60, 60)
    assert [m["headers"]["Nats-Msg-Id"] for m in messages(nats_url)] == [e[2].hex() for e in log]


def test_jetstream_resumes_after_the_stream_last_message_when_a_resend_would_fall_outside_the_duplicate_window(
        make_node, nats_url):
    """The position file lost (as if SIGKILLed between the acks and the save), the duplicate window long
    past: the sink resumes after the stream's last message of the origin instead of sending again."""
    import asyncio
    import json
    import os
    import time

    import nats

    async def create_stream_with_short_window() -> None:
        nc = await nats.connect(nats_url)
        doc = {"name": "ATS", "subjects": ["ats.events.>"], "storage": "file", "duplicate_window": 100_000_000}
        answer = json.loads((await nc.request("$JS.API.STREAM.CREATE.ATS", json.dumps(doc).encode(), timeout=5)).data)
        await nc.close()
        assert "error" not in answer, answer

    asyncio.run(create_stream_with_short_window())
    agent = TestAgent()
    node = make_node(env={"ATS_EXPORT_NATS": nats_url, "ATS_BUDGETS": "false"}).start()
    submit(node.url, acts(agent, 50))
    wait_for("caught up", lambda: caught_up(node.url, ("nats",)))
    node.stop()
    os.remove(os.path.join(node.data_dir, "export-positions.sqlite"))
    time.sleep(0.3)  # three duplicate windows: a resend would now be stored again
    node.start()
    submit(node.url, acts(agent, 5))
    wait_for("caught up after restart", lambda: caught_up(node.url, ("nats",)))
    log = own_entries(node.data_dir, node.origin)
    assert [m["headers"]["Nats-Msg-Id"] for m in messages(nats_url)] == [e[2].hex() for e in log]


def test_a_fleet_collector_exports_every_origin_and_an_event_in_two_logs_once(make_node, pg_url, nats_url):
    open_ = {"ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "200", "ATS_BUDGETS": "false"}
    a = make_node("a", host="127.0.0.2", env=open_).start()
    # no peer yet: a's push would otherwise bring the shared events to the collector before the agent's copy
    collector = make_node("c", host="127.0.0.3", env={**open_, "ATS_EXPORT_ORIGINS": "all",
                                                       "ATS_EXPORT_POSTGRES": pg_url, "ATS_EXPORT_NATS": nats_url}).start()
    agent = TestAgent()
    both = acts(agent, 5, cost=9000)  # the agent sent these to both nodes: two logs hold them
    assert submit(a.url, acts(agent, 30) + both) == 35
    assert submit(collector.url, both + acts(agent, 10)) == 15
    collector.stop()
    collector.env["ATS_PEERS"] = a.url  # now the collector replicates a's log
    collector.start()
    a_log = own_entries(a.data_dir, a.origin)
    wait_for("a's log replicated to the collector",
             lambda: len([e for e in ledger_entries(collector.data_dir) if e[0].hex() == a.origin]) >= len(a_log))
    wait_for("collector caught up", lambda: caught_up(collector.url, ("postgres", "nats")))
    entries = ledger_entries(collector.data_dir)
    ids = {e[2] for e in entries}
    assert len(ids) == len(entries) - 5 >= 45
    rows = pg_rows(pg_url, "SELECT event_id FROM ats_events")
    assert sorted(r[0] for r in rows) == sorted(ids)
    places = pg_rows(pg_url, "SELECT origin, idx, event_id FROM ats_log_entries ORDER BY origin, idx")
    assert sorted(places) == sorted((e[0], e[1], e[2]) for e in entries)  # both places of the shared events
    msg_ids = [bytes.fromhex(m["headers"]["Nats-Msg-Id"]) for m in messages(nats_url)]
    assert sorted(msg_ids) == sorted(ids)  # each event once, from whichever log was exported first
    assert {s["origin"] for s in map(summary, messages(nats_url))} == {a.origin, collector.origin}


async def test_the_dashboard_shows_each_exporter_down_with_its_backlog_then_caught_up(make_node):
    from tests.browser import Browser
    from tests.export.servers import NatsServer

    nats = NatsServer()
    browser = Browser()
    try:
        node = make_node(env={"ATS_EXPORT_NATS": nats.url, "ATS_BUDGETS": "false", "ATS_EXPORT_RETRY_MS_MAX": "300",
                              "ATS_EXPORT_ALERT_EVENTS": "10"}).start()
        submit(node.url, acts(TestAgent(), 12))
        await browser.start()
        await browser.goto(f"{node.url}/?refresh=1")
        row = "document.querySelector('[data-testid=exporter][data-sink=nats]')"
        await browser.wait_for(f"{row} && {row}.dataset.state === 'down' && {row}.dataset.backlog === '12'", 20,
                               what="the exporter shown down with its backlog")
        nats.start()
        await browser.wait_for(f"{row}.dataset.state === 'ok' && {row}.dataset.backlog === '0'", 20,
                               what="the exporter shown caught up")
        assert await browser.eval("document.getElementById('exports-section').hidden") is False
    finally:
        await browser.close()
        nats.remove()
