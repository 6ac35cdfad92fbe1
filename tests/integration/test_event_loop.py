"""event_loop = uvloop: the same node on libuv's event loop (node/cli.py), a real process on loopback."""

from __future__ import annotations

import subprocess
import sys

from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor
from tests.integration.nodeproc import NodeProcess


def test_a_node_on_uvloop_serves_ingests_through_its_workers_and_stops_cleanly(tmp_path):
    node = NodeProcess(str(tmp_path / "n"), env={"ATS_EVENT_LOOP": "uvloop", "ATS_LOG_LEVEL": "info"})
    node.start()
    try:
        agent = TestAgent()
        assert post_cbor(node.url, "/v1/events", agent.envelope()).status == 201
        batch = [agent.envelope("act", {"op": "x", "cost": 1}) for _ in range(40)]  # past BATCH_MIN: to a worker
        reply = post_cbor(node.url, "/v1/events/batch", bytes([0x98, 40]) + b"".join(batch))
        assert reply.status == 200 and reply.json()["accepted"] == 40
        health = get(node.url, "/healthz")
        assert health.status == 200
        assert get(node.url, "/v1/log/checkpoint").status == 200
    finally:
        code = node.stop()  # SIGTERM: the clean shutdown, on this loop too
    assert code == 0
    with open(node.stderr_path) as f:
        assert "event loop: uvloop.Loop" in f.read()


def test_an_unknown_event_loop_is_refused_with_the_setting_named(tmp_path):
    out = subprocess.run([sys.executable, "-m", "node", "node", "--data-dir", str(tmp_path / "n")],
                         env={"ATS_EVENT_LOOP": "trio", "PATH": "/usr/bin:/bin"}, capture_output=True, text=True, timeout=60)
    assert out.returncode == 2
    assert "event_loop" in out.stderr and "uvloop" in out.stderr
