"""Chaos for the exporters, shared by tests/export/test_export_chaos.py and scripts/chaos_export.py.

While a submitter keeps sending events, each round SIGKILLs the node (and restarts it on the
same port), restarts PostgreSQL in immediate mode (a crash: WAL replay on start) and SIGKILLs
nats-server (then starts it again on the same folder). At the end the submitter stops, the
exporters catch up, and the sinks are compared with the node's own log read from its SQLite
file: the same event ids, each once, the same cost sum.
"""

from __future__ import annotations

import http.client
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tests.agentkit import TestAgent
from tests.export.helpers import acts, cbor_array, caught_up, messages, own_entries, pg_rows, wait_for
from tests.export.servers import NatsServer, PostgresServer
from tests.integration.nodeproc import NodeProcess

BATCH = 20


@dataclass
class ChaosReport:
    rounds: int
    log_events: int
    pg_rows: int
    pg_distinct: int
    nats_messages: int
    nats_distinct: int
    lost_pg: int
    lost_nats: int
    cost_log: int
    cost_pg: int
    cost_nats: int
    submit_errors: int
    seconds: float
    faults: list[str] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        return (self.lost_pg == self.lost_nats == 0 and self.pg_rows == self.pg_distinct == self.log_events
                and self.nats_messages == self.nats_distinct == self.log_events
                and self.cost_log == self.cost_pg == self.cost_nats)


class Submitter(threading.Thread):
    """Keeps posting batches of acts; a batch that fails (node down) is posted again (a duplicate is fine)."""

    def __init__(self, node: NodeProcess):
        super().__init__(daemon=True)
        self.node, self.agent, self.stop_flag = node, TestAgent(), threading.Event()
        self.accepted = self.errors = 0

    def run(self) -> None:
        batch = cbor_array(acts(self.agent, BATCH))
        while not self.stop_flag.is_set():
            try:
                conn = http.client.HTTPConnection("127.0.0.1", self.node.port, timeout=5)
                conn.request("POST", "/v1/events/batch", body=batch, headers={"Content-Type": "application/cbor"})
                resp = conn.getresponse()
                resp.read()
                conn.close()
                if resp.status == 200:
                    batch = cbor_array(acts(self.agent, BATCH))
                    time.sleep(0.01)
                    continue
            except OSError:
                pass
            self.errors += 1
            time.sleep(0.05)


def run_chaos(root: str, rounds: int, pause_s: float, pg: PostgresServer, nats: NatsServer) -> ChaosReport:
    pg_url = pg.create_db(f"chaos_{int(time.time() * 1000)}")
    env = {"ATS_EXPORT_POSTGRES": pg_url, "ATS_EXPORT_NATS": nats.url, "ATS_BUDGETS": "false",
           "ATS_EXPORT_RETRY_MS_MAX": "300"}
    node = NodeProcess(f"{root}/node", env=env).start()
    started = time.monotonic()
    submitter = Submitter(node)
    faults: list[str] = []
    try:
        submitter.start()
        for r in range(rounds):
            time.sleep(pause_s)
            node.restart()  # SIGKILL, then start on the same port and data folder
            faults.append(f"round {r}: node SIGKILLed and restarted")
            time.sleep(pause_s)
            pg.restart_immediate()
            faults.append(f"round {r}: PostgreSQL stopped -m immediate and started")
            time.sleep(pause_s)
            nats.kill()
            time.sleep(pause_s / 2)
            nats.start()
            faults.append(f"round {r}: nats-server SIGKILLed and started")
        time.sleep(pause_s)
        submitter.stop_flag.set()
        submitter.join(10)
        wait_for("exporters caught up", lambda: _caught_up(node), 60)
        return _compare(node, pg_url, nats.url, rounds, submitter.errors, time.monotonic() - started, faults)
    finally:
        submitter.stop_flag.set()
        node.kill()


def _caught_up(node: NodeProcess) -> bool:
    try:
        return caught_up(node.url, ("postgres", "nats"))
    except (OSError, KeyError, ValueError):
        return False


def _compare(node: NodeProcess, pg_url: str, nats_url: str, rounds: int, submit_errors: int, seconds: float,
             faults: list[str]) -> ChaosReport:
    log = own_entries(node.data_dir, node.origin)
    ids = {e[2] for e in log}
    import cbor2

    def cost(env: bytes) -> int:
        return cbor2.loads(cbor2.loads(env)["event"])["body"].get("cost", 0)

    cost_log = sum(cost(e[4]) for e in log if e[3] == "act")
    rows: list[Any] = pg_rows(pg_url, "SELECT event_id, cost_mt FROM ats_events")
    msgs = messages(nats_url)
    msg_ids = [bytes.fromhex(m["headers"]["Nats-Msg-Id"]) for m in msgs]
    import json

    return ChaosReport(
        rounds=rounds, log_events=len(log), pg_rows=len(rows), pg_distinct=len({r[0] for r in rows}),
        nats_messages=len(msgs), nats_distinct=len(set(msg_ids)),
        lost_pg=len(ids - {r[0] for r in rows}), lost_nats=len(ids - set(msg_ids)),
        cost_log=cost_log, cost_pg=sum(r[1] for r in rows),
        cost_nats=sum(json.loads(m["headers"]["Ats-Summary"])["cost_mt"] for m in msgs),
        submit_errors=submit_errors, seconds=seconds, faults=faults,
    )
