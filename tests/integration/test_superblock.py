"""A lost -wal file must not make a node sign its log again below what it signed (issue 10, class 7).

Real node processes: events acknowledged, SIGKILL, the -wal deleted or truncated, restart. The node
must come back read-only (503 read_only on writes and on /healthz, saying why), never sign a
checkpoint below the size recorded in its superblock, and restart normally when nothing was lost.
"""

import os
import signal
import sqlite3

from node.superblock import FILE_NAME, SLOT_BYTES, read
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor
from tests.integration.nodeproc import NodeProcess

EVENTS = 6


def _fill(data: str, served: list[str] | None = None) -> NodeProcess:
    """A node with EVENTS acknowledged events (one checkpoint each, each one served), SIGKILLed:
    they sit in its -wal."""
    node = NodeProcess(data).start()
    agent = TestAgent()
    for _ in range(EVENTS):
        assert post_cbor(node.url, "/v1/events", agent.envelope()).status == 201
        if served is not None:
            served.append(get(node.url, "/v1/log/checkpoint").body.decode())
    node.kill(signal.SIGKILL)
    return node


def _db_state(data: str) -> tuple[int, int]:
    """(entries, largest checkpoint size) of the node's own log, read back from the file."""
    conn = sqlite3.connect(os.path.join(data, "ledger.sqlite"))
    try:
        entries = conn.execute("SELECT count(*) FROM entries").fetchone()[0]
        top = conn.execute("SELECT coalesce(max(size), -1) FROM checkpoints").fetchone()[0]
    finally:
        conn.close()
    return entries, top


def _assert_read_only(node: NodeProcess, *phrases: str) -> None:
    health = get(node.url, "/healthz")
    assert health.status == 503 and health.code == "read_only", health.body
    message = health.json()["error"]["message"]
    for phrase in phrases:
        assert phrase in message, message
    reply = post_cbor(node.url, "/v1/events", TestAgent().envelope())
    assert reply.status == 503 and reply.code == "read_only"
    assert "safe paths" in reply.json()["error"]["message"]


def test_deleted_wal_after_sigkill_turns_node_read_only_and_it_never_signs_below(tmp_path):
    data = str(tmp_path / "n")
    served: list[str] = []
    node = _fill(data, served)
    assert os.path.getsize(os.path.join(data, "ledger.sqlite-wal")) > 0
    os.unlink(os.path.join(data, "ledger.sqlite-wal"))
    entries, top = _db_state(data)
    assert entries < EVENTS  # the acknowledged events are gone with the -wal
    with node:
        _assert_read_only(node, f"signed a checkpoint at size {EVENTS}", f"holds {entries} entries")
        assert get(node.url, "/v1/node").json()["read_only"] is True
        # what it serves now is an old checkpoint it signed then, never a new one at a size it signed
        note = get(node.url, "/v1/log/checkpoint").body.decode()
        assert note.split("\n")[1] == str(entries) and (entries == 0 or note in served)
    assert _db_state(data) == (entries, top)  # no new checkpoint was signed
    assert read(os.path.join(data, FILE_NAME))[0].size == EVENTS


def test_truncated_wal_after_sigkill_turns_node_read_only(tmp_path):
    data = str(tmp_path / "n")
    node = _fill(data)
    wal = os.path.join(data, "ledger.sqlite-wal")
    with open(wal, "r+b") as f:
        f.truncate(os.path.getsize(wal) // 2)
    entries, top = _db_state(data)
    assert entries < EVENTS
    with node:
        _assert_read_only(node, f"signed a checkpoint at size {EVENTS}")
    assert _db_state(data) == (entries, top)


def test_sigkill_and_clean_restarts_with_the_wal_intact_stay_writable(tmp_path):
    data = str(tmp_path / "n")
    node = _fill(data)
    agent = TestAgent()
    with node:
        assert get(node.url, "/healthz").status == 200
        assert post_cbor(node.url, "/v1/events", agent.envelope()).status == 201
        assert node.stop() == 0
    with node:
        assert get(node.url, "/healthz").status == 200
        assert post_cbor(node.url, "/v1/events", agent.envelope()).status == 201
    assert read(os.path.join(data, FILE_NAME))[0].size == EVENTS + 2


def test_missing_or_corrupt_superblock_on_a_log_with_events_refuses_one_bad_slot_does_not(tmp_path):
    data = str(tmp_path / "n")
    node = _fill(data)
    path = os.path.join(data, FILE_NAME)
    with open(path, "r+b") as f:  # a torn write spoils one slot: the other one is used
        f.seek(((EVENTS + 1) % 2) * SLOT_BYTES)  # the slot written last (seq = EVENTS + 1)
        f.write(b"\xff" * 16)
    with node:
        assert get(node.url, "/healthz").status == 200
        node.stop()
    with open(path, "r+b") as f:
        f.write(b"\xff" * 2 * SLOT_BYTES)
    with node:
        _assert_read_only(node, "superblock is unreadable")
    os.unlink(path)
    with node:
        _assert_read_only(node, "superblock", "is missing")
    assert not os.path.exists(path)


def test_data_folder_from_before_superblocks_gets_one_at_start(tmp_path):
    data = str(tmp_path / "n")
    node = _fill(data)
    with node:
        node.stop()
    os.unlink(os.path.join(data, FILE_NAME))
    conn = sqlite3.connect(os.path.join(data, "ledger.sqlite"))
    conn.execute("DELETE FROM meta WHERE key = 'superblock'")
    conn.commit()
    conn.close()
    with node:
        assert get(node.url, "/healthz").status == 200
    assert read(os.path.join(data, FILE_NAME))[0].size == EVENTS


def test_new_node_key_in_an_old_folder_starts_its_own_superblock(tmp_path):
    data = str(tmp_path / "n")
    node = _fill(data)
    old = read(os.path.join(data, FILE_NAME))[0].origin
    os.unlink(os.path.join(data, "node.key"))
    with node:
        assert node.origin != old.hex()
        assert get(node.url, "/healthz").status == 200
        assert post_cbor(node.url, "/v1/events", TestAgent().envelope()).status == 201
    rec = read(os.path.join(data, FILE_NAME))[0]
    assert (rec.origin.hex(), rec.size) == (node.origin, 1)


def test_failed_commit_takes_its_checkpoint_back_from_the_superblock(tmp_path):
    data = str(tmp_path / "n")
    path = os.path.join(data, FILE_NAME)
    agent = TestAgent()
    with NodeProcess(data) as node:
        assert post_cbor(node.url, "/v1/events", agent.envelope()).status == 201
        # the next checkpoint's INSERT fails inside the commit, after the superblock recorded it
        _sql(data, "CREATE TRIGGER refuse BEFORE INSERT ON checkpoints WHEN NEW.size = 2"
                   " BEGIN SELECT RAISE(ABORT, 'refused by the test'); END")
        reply = post_cbor(node.url, "/v1/events", agent.envelope())
        assert reply.status == 503 and reply.code == "storage_error"
        assert read(path)[0].size == 1  # taken back: the database holds size 1
        _sql(data, "DROP TRIGGER refuse")
        assert post_cbor(node.url, "/v1/events", agent.envelope()).status == 201
        assert read(path)[0].size == 2
        node.kill(signal.SIGKILL)
        node.start()
        assert get(node.url, "/healthz").status == 200


def _sql(data: str, statement: str) -> None:
    conn = sqlite3.connect(os.path.join(data, "ledger.sqlite"))
    try:
        conn.execute(statement)
        conn.commit()
    finally:
        conn.close()
