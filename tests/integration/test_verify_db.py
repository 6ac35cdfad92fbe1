"""`ats verify-db` names every stored value that differs from the signed envelopes (issue 10, class 4).

One data folder is written once per module by a real node process (agents acting before and after
their registration, trust ratings, every metering kind), then each test changes one value in a copy
of the SQLite file and expects exactly that row named: table, key, column, stored and expected.
"""

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from ledger.merkle import stored_hash_count, stored_hash_index, tree_hash_indexes
from node.config import load
from node.store.integrity import ENTRY_COLUMNS
from node.superblock import FILE_NAME, Superblock, read
from node.verifydb import check_data_dir
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor
from tests.integration.nodeproc import NodeProcess

AUTH = TestAgent()
ENV = {"ATS_AUTHORITIES": AUTH.public_key.hex()}


def _post(node, agent, kind, body):
    reply = post_cbor(node.url, "/v1/events", agent.envelope(kind, body))
    assert reply.status == 201, reply.body


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """(data folder, {name: index}) of a node's log: acts before and after a registration, dat, cpt, trt."""
    data = str(tmp_path_factory.mktemp("verify") / "n")
    a, b, user = TestAgent(), TestAgent(), TestAgent()
    where = {}
    with NodeProcess(data, env=ENV) as node:
        for i in range(3):
            _post(node, a, "act", {"op": "llm.call", "cost": 1000 + i, "units": 10 + i})
        _post(node, AUTH, "agent.register", {"agent": a.public_key, "user": user.public_key, "team": "research",
                                             "platform": "edge", "plan": "freemium"})
        for i in range(6):
            _post(node, a, "act", {"op": "llm.call", "cost": 2000 + i, "units": 20 + i})
        where["act"] = 5
        for i in range(3):
            _post(node, a, "dat", {"src": bytes(32), "dst": bytes([1]) * 32, "read": 100 + i, "written": 7, "dur": 3})
        where["dat"] = 10
        for i in range(3):
            _post(node, a, "cpt", {"node": "n1", "cpu": 5 + i, "gpu": 1, "mem": 64, "jobs": 2})
        where["cpt"] = 13
        for i in range(3):
            _post(node, b, "trt", {"subject": a.public_key, "type": "feedback", "value": 300 + i, "halflife": 3600})
        where["trt"] = 16
        for i in range(4):
            _post(node, b, "act", {"op": "tool.run", "cost": 500 + i})
        assert node.stop() == 0
    return data, where


@pytest.fixture
def copy(built, tmp_path):
    data = str(tmp_path / "copy")
    shutil.copytree(built[0], data)
    return data


def _check(data):
    return check_data_dir(data, load(None, ENV, {"data_dir": data}), show=False)


def _sql(data, *statements):
    conn = sqlite3.connect(os.path.join(data, "ledger.sqlite"))
    try:
        for sql, *args in statements:
            conn.execute(sql, *args)
        conn.commit()
    finally:
        conn.close()


def _one(data, table, column, **key):
    """The only finding of the report, which must name table, column and key."""
    report = _check(data)
    assert not report["ok"]
    assert len(report["findings"]) == 1, report["findings"]
    f = report["findings"][0]
    assert (f["table"], f["column"]) == (table, column)
    for k, v in key.items():
        assert f["key"][k] == v
    return f


def _size(data):
    conn = sqlite3.connect(os.path.join(data, "ledger.sqlite"))
    try:
        return conn.execute("SELECT size FROM origins ORDER BY id LIMIT 1").fetchone()[0]
    finally:
        conn.close()


def test_untouched_folder_verifies_with_every_counter_replayed(built):
    report = _check(built[0])
    assert report["ok"], report["findings"]
    assert report["entries"] == 23 and report["counters"] >= 16


@pytest.mark.parametrize("column", ENTRY_COLUMNS)
def test_changed_entry_column_is_named(copy, built, column):
    kind = {"subject": "trt", "m2": "dat", "m3": "cpt"}.get(column, "act")
    idx = built[1][kind]
    conn = sqlite3.connect(os.path.join(copy, "ledger.sqlite"))
    stored = conn.execute(f"SELECT {column} FROM entries WHERE idx = ?", (idx,)).fetchone()[0]
    conn.close()
    lie = {bytes: lambda v: bytes([v[0] ^ 1]) + v[1:], int: lambda v: v + 1, str: lambda v: "cpt"}[type(stored)](stored)
    _sql(copy, (f"UPDATE entries SET {column} = ? WHERE idx = ?", (lie, idx)))
    f = _one(copy, "entries", column, idx=idx)
    assert (f["stored"], f["expected"]) == (_hexed(lie), _hexed(stored))


def _hexed(v):
    return v.hex() if isinstance(v, bytes) else v


def test_swapped_envelope_is_named_by_its_id_and_its_leaf(copy, built):
    _sql(copy, ("UPDATE entries SET envelope = ? WHERE idx = 4", (TestAgent().envelope(),)))
    findings = _check(copy)["findings"]
    named = {(f["table"], f["column"], f["key"].get("idx"), f["key"].get("sidx")) for f in findings}
    assert ("entries", "event_id", 4, None) in named and ("tree_hashes", "hash", None, stored_hash_index(0, 4)) in named
    assert any(f["table"] == "checkpoints" and f["column"] == "note (the entries' root)" for f in findings)


def _interior_not_on_frontier(n):
    frontier = set(tree_hash_indexes(n))
    picks = []
    for level in range(5):
        for pos in range(n >> level):
            sidx = stored_hash_index(level, pos)
            if sidx not in frontier:
                picks.append(sidx)
                break
    return picks


@pytest.mark.parametrize("which", range(4))
def test_flipped_tree_hash_off_the_frontier_is_named(copy, which):
    sidx = _interior_not_on_frontier(_size(copy))[which]
    _sql(copy, ("UPDATE tree_hashes SET hash = zeroblob(32) WHERE sidx = ?", (sidx,)))
    f = _one(copy, "tree_hashes", "hash", sidx=sidx)
    assert f["stored"] == "00" * 32


def test_missing_and_extra_tree_hash_rows_are_named(copy):
    n = _size(copy)
    _sql(copy, ("DELETE FROM tree_hashes WHERE sidx = 3",),
         ("INSERT INTO tree_hashes (origin, sidx, hash) VALUES (1, ?, zeroblob(32))", (stored_hash_count(n) + 2,)))
    findings = {(f["key"]["sidx"], f["column"], f["stored"]) for f in _check(copy)["findings"]}
    assert findings == {(3, "hash", None), (stored_hash_count(n) + 2, "(row)", "present")}


def test_changed_origin_size_is_named(copy):
    _sql(copy, ("UPDATE origins SET size = size - 1",))
    f = _one(copy, "origins", "size")
    assert f["stored"] == f["expected"] - 1


def test_deleted_entry_is_named(copy):
    _sql(copy, ("DELETE FROM entries WHERE idx = 7",))
    findings = _check(copy)["findings"]
    assert {"table": "entries", "key": {"origin": findings[0]["key"]["origin"], "idx": 7}, "column": "(row)",
            "stored": None, "expected": "present (entries are contiguous from 0)"} in findings


def test_changed_checkpoint_root_column_is_named(copy):
    _sql(copy, ("UPDATE checkpoints SET root = zeroblob(32) WHERE size = 9",))
    _one(copy, "checkpoints", "root", size=9)


def test_changed_checkpoint_note_is_named(copy):
    _sql(copy, ("UPDATE checkpoints SET note = replace(note, char(10) || '9' || char(10), char(10) || '8' || char(10))"
                " WHERE size = 9",))
    f = _one(copy, "checkpoints", "note", size=9)
    assert "signature" in f["stored"] or "bad" in f["stored"]


def _counter(data, scope):
    conn = sqlite3.connect(os.path.join(data, "ledger.sqlite"))
    try:
        return conn.execute("SELECT scope, scope_id, metric, window, start_ms, amount FROM usage_counters"
                            " WHERE scope = ? ORDER BY metric, window LIMIT 1", (scope,)).fetchone()
    finally:
        conn.close()


@pytest.mark.parametrize("scope", ["agent", "user", "team", "platform"])
def test_changed_usage_counter_is_named(copy, scope):
    key = _counter(copy, scope)
    _sql(copy, ("UPDATE usage_counters SET amount = amount - 1 WHERE scope = ? AND scope_id = ? AND metric = ?"
                " AND window = ? AND start_ms = ?", key[:5]))
    f = _one(copy, "usage_counters", "amount", scope=scope, scope_id=key[1], metric=key[2], window=key[3])
    assert (f["stored"], f["expected"]) == (key[5] - 1, key[5])


def test_deleted_and_invented_usage_counters_are_named(copy):
    key = _counter(copy, "agent")
    _sql(copy, ("DELETE FROM usage_counters WHERE scope = ? AND scope_id = ? AND metric = ? AND window = ?"
                " AND start_ms = ?", key[:5]),
         ("INSERT INTO usage_counters VALUES ('team', 'nobody', 'act.cost', 'day', 0, 5)",))
    found = {(f["key"]["scope_id"], f["stored"], f["expected"]) for f in _check(copy)["findings"]}
    assert found == {(key[1], None, key[5]), ("nobody", 5, None)}


def test_superblock_ahead_of_the_log_is_named(copy):
    path = os.path.join(copy, FILE_NAME)
    rec = read(path)[0]
    sb = Superblock(path, rec)
    sb.record(rec.size + 5, rec.root)
    sb.close()
    f = _one(copy, "superblock", "size")
    assert f["stored"] == rec.size + 5


def test_cli_exit_codes_and_json_report(copy):
    cli = [sys.executable, "-m", "node", "verify-db", copy]
    env = {**os.environ, **ENV}
    ok = subprocess.run(cli, capture_output=True, text=True, timeout=60, env=env)
    assert ok.returncode == 0 and "verified 23 entries" in ok.stdout, ok.stderr
    _sql(copy, ("UPDATE entries SET ts = ts + 1 WHERE idx = 2",))
    text = subprocess.run(cli, capture_output=True, text=True, timeout=60, env=env)
    assert text.returncode == 1 and "FAIL 1 stored values differ" in text.stderr
    assert "DIFF entries" in text.stdout and "idx=2 ts: stored" in text.stdout
    out = subprocess.run(cli + ["--json"], capture_output=True, text=True, timeout=60, env=env)
    report = json.loads(out.stdout)
    assert out.returncode == 1 and report["differences"] == 1 and report["findings"][0]["key"]["idx"] == 2


@pytest.mark.parametrize("lie", ["column", "tree_hash"])
def test_node_start_finds_a_lie_in_its_newest_entries_and_turns_read_only(copy, lie):
    if lie == "column":
        _sql(copy, ("UPDATE entries SET m0 = m0 + 1 WHERE idx = 20",))
        phrase = "idx=20 m0"
    else:
        sidx = _interior_not_on_frontier(_size(copy))[2]
        _sql(copy, ("UPDATE tree_hashes SET hash = zeroblob(32) WHERE sidx = ?", (sidx,)))
        phrase = f"sidx={sidx}"
    with NodeProcess(copy, env=ENV) as node:
        health = get(node.url, "/healthz")
        assert health.status == 503 and health.code == "read_only"
        message = health.json()["error"]["message"]
        assert "startup check failed" in message and phrase in message, message
        assert post_cbor(node.url, "/v1/events", TestAgent().envelope()).code == "read_only"


def test_forged_cosignature_and_checkpoint_beyond_the_log_are_named(copy):
    from ledger.checkpoint import cosign, open_checkpoint, origin_line
    from ledger.signing import public_key_from_seed

    conn = sqlite3.connect(os.path.join(copy, "ledger.sqlite"))
    origin, note = conn.execute("SELECT o.public_key, c.note FROM checkpoints c JOIN origins o ON o.id = c.origin"
                                " WHERE c.size = 9").fetchone()
    conn.close()
    cp = open_checkpoint(note, origin)[0]
    seed = os.urandom(32)
    witness = public_key_from_seed(seed)
    line = cosign(cp, origin_line(witness), seed, 1_700_000_000).line().rstrip("\n")
    _sql(copy, ("INSERT INTO cosignatures VALUES (1, 9, ?, ?, 0)", (witness, line)))
    assert _check(copy)["ok"]  # a genuine cosignature verifies
    other = public_key_from_seed(os.urandom(32))  # the same line filed under another witness
    _sql(copy, ("INSERT INTO cosignatures VALUES (1, 9, ?, ?, 0)", (other, line)),
         ("INSERT INTO checkpoints VALUES (1, 99, zeroblob(32), ?, 0)", (note,)))
    found = {(f["table"], f["column"], f["key"].get("size"), f["key"].get("witness")) for f in _check(copy)["findings"]}
    assert found == {("cosignatures", "line", 9, other.hex()), ("checkpoints", "size", 99, None),
                     ("checkpoints", "root", 99, None), ("checkpoints", "note", 99, None)}
