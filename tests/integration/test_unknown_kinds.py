"""Rolling upgrades: an event of a kind this release does not know, validly signed, arrives by
replication. It is stored and relayed, counted nowhere, flagged, and its sender is not penalised.

A newer origin (the test signs its log: one entry of kind `x.future` between two `act` entries)
is served by an honest peer; node A, a real node process, replicates it; node B, another real
node process that knows only A, replicates it from A. Both keep every peer in good standing,
both count the two `act` events and nothing else, `ats verify-db` accepts the stored log, and the
node still starts after a restart (the budget book replays the log without the unknown kind).
"""

import os
import re
import subprocess
import sys

from ledger import encoding
from ledger.events import make_envelope_bytes
from ledger.signing import sign
from tests.agentkit import TestAgent
from tests.integration.http import get
from tests.integration.nodeproc import NodeProcess
from tests.integration.test_hostile_peers import FakeOrigin, HostilePeer, held_sizes, peer_view, wait_for


def _future_envelope(agent: TestAgent) -> bytes:
    raw = encoding.encode({"v": 1, "kind": "x.future", "signer": agent.public_key, "ts": 1_780_000_000_000,
                           "nonce": os.urandom(16), "body": {"op": "from.a.newer.node", "cost": 5_000}})
    return make_envelope_bytes(raw, sign(raw, agent.seed))


def _metric(node, name):
    text = get(node.url, "/metrics").body.decode()
    m = re.search(rf"^{name} (\S+)$", text, re.M)
    return float(m.group(1)) if m else None


def test_an_unknown_kind_is_stored_relayed_counted_nowhere_and_flagged(tmp_path):
    origin, agent = FakeOrigin(), TestAgent()
    origin.entries = [agent.envelope(), _future_envelope(agent), agent.envelope()]
    peer = HostilePeer()  # here an honest one: it serves the newer origin's signed log as it is
    env = {"ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "100"}
    a = b = None
    try:
        peer.serve(origin, origin.entries)
        a = NodeProcess(str(tmp_path / "a"), host="127.0.0.6", env={**env, "ATS_PEERS": peer.url}).start()
        wait_for(lambda: held_sizes(a).get(origin.key.hex()) == 3, "node A holds the newer origin's log")
        b = NodeProcess(str(tmp_path / "b"), host="127.0.0.7", env={**env, "ATS_PEERS": a.url}).start()
        wait_for(lambda: held_sizes(b).get(origin.key.hex()) == 3, "node B holds it, relayed by A")
        view_a = peer_view(a, peer.url)
        assert view_a["penalties"] == 0 and view_a["state"] == "ok", view_a
        view_b = peer_view(b, a.url)
        assert view_b["penalties"] == 0 and view_b["state"] == "ok", view_b
        for node in (a, b):
            assert _metric(node, "ats_replication_unknown_kind_events_total") == 1
            usage = get(node.url, f"/v1/agents/{agent.public_key.hex()}/usage").json()
            # the two act events carry every amount; the unknown kind is listed as stored, with no amount
            assert usage["totals"] == {"act": {"count": 2, "cost": 2000, "units": 20}, "x.future": {"count": 1}}
        assert "kinds this release does not know (x.future)" in a.stderr()
        b.kill()
        out = subprocess.run([sys.executable, "-m", "node", "verify-db", b.data_dir], capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0 and "verified 3 entries" in out.stdout, out.stdout + out.stderr
        b.start()
        wait_for(lambda: get(b.url, "/v1/peers").status == 200, "node B back after a restart")
        assert get(b.url, f"/v1/agents/{agent.public_key.hex()}/usage").json()["totals"]["act"]["cost"] == 2000
    finally:
        for node in (a, b):
            if node is not None:
                node.kill()
        peer.close()
