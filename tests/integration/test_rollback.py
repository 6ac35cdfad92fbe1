"""A whole data folder restored from an older copy cannot be seen by the node itself: its peer sees it.

Real node processes on 127.0.10.x (issue 10, class 4): node a's folder, superblock and all, is rolled
back to a consistent copy taken at size 3 after its peer b replicated it to size 6. Locally nothing
is wrong (the documented limit, docs/integrity.md), so a starts writable and signs new checkpoints
at sizes it had signed before with other roots; b catches that as fork evidence against a's key,
which anyone can check, and stops merging a's log.
"""

import shutil

from consensus.verify import check_fork_evidence
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor
from tests.integration.nodeproc import NodeProcess
from tests.integration.waiting import wait_until

ENV = {"ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "200", "ATS_BUDGETS": "false"}
WAIT_S = 30


def _wait(what, fn):
    return wait_until(what, fn, WAIT_S)


def _held(b, a):
    reply = get(b.url, f"/v1/log/checkpoint?origin={a.origin}")
    return int(reply.body.decode().split("\n")[1]) if reply.status == 200 else -1


def test_whole_folder_rollback_of_a_node_is_caught_by_its_peer_as_fork_evidence(tmp_path):
    agent = TestAgent()
    a = NodeProcess(str(tmp_path / "a"), host="127.0.10.2", port=18471, env=ENV)
    b = NodeProcess(str(tmp_path / "b"), host="127.0.10.3", env={**ENV, "ATS_PEERS": "http://127.0.10.2:18471"})
    try:
        a.start()
        b.start()
        for _ in range(3):
            assert post_cbor(a.url, "/v1/events", agent.envelope()).status == 201
        _wait("b to hold 3 entries of a", lambda: _held(b, a) == 3)
        assert a.stop() == 0
        shutil.copytree(a.data_dir, str(tmp_path / "a-backup"))  # a consistent copy at size 3
        a.start()
        for _ in range(3):
            assert post_cbor(a.url, "/v1/events", agent.envelope()).status == 201
        _wait("b to hold 6 entries of a", lambda: _held(b, a) == 6)

        a.kill()
        shutil.rmtree(a.data_dir)
        shutil.copytree(str(tmp_path / "a-backup"), a.data_dir)  # the whole folder, superblock included
        a.start()
        assert get(a.url, "/healthz").status == 200  # the limit: locally the old copy is consistent
        for _ in range(2):
            assert post_cbor(a.url, "/v1/events", agent.envelope()).status == 201  # signs sizes 4 and 5 again

        forks = _wait("b's fork evidence against a", lambda: get(b.url, "/v1/forks").json()["forks"])
        assert forks[0]["origin"] == a.origin
        assert check_fork_evidence(forks[0]["evidence"])[0] == bytes.fromhex(a.origin)  # anyone can check it
        assert _held(b, a) == 6  # b keeps the history it verified and merges no other
    finally:
        a.kill()
        b.kill()
