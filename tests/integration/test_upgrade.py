"""Upgrades: the previous release's data folder (tests/fixtures/upgrade/, made by that release's code
with scripts/make_upgrade_fixture.py) opens and migrates; a migration killed by SIGKILL rolls back
whole and runs again; a node of the previous release (its code from `git archive`) and a node of
this one replicate both ways, as during a rolling upgrade."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import time
from contextlib import closing
from pathlib import Path

import pytest

from node.store.schema import MIGRATIONS
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor
from tests.integration.nodeproc import NodeProcess

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "upgrade"
PREVIOUS = "0.1.0"
WAIT_S = 30


def manifest(release: str = PREVIOUS) -> dict:
    return json.loads((FIXTURES / release / "manifest.json").read_text())


def fixture_copy(tmp_path: Path, release: str = PREVIOUS) -> str:
    data = tmp_path / f"data-{release}"
    shutil.copytree(FIXTURES / release, data, ignore=shutil.ignore_patterns("manifest.json"))
    return str(data)


def node_env(m: dict) -> dict[str, str]:
    return {"ATS_AUTHORITIES": m["authority"], "ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "200"}


def schema_version(data: str) -> int:
    with closing(sqlite3.connect(os.path.join(data, "ledger.sqlite"))) as conn:
        return int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])


def ats(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=120)


def submit(node: NodeProcess, agent: TestAgent, n: int = 1) -> list[dict]:
    envelopes = [agent.envelope("act", {"op": "llm.call", "cost": 7, "units": 1}) for _ in range(n)]
    reply = post_cbor(node.url, "/v1/events/batch", bytes([0x80 + n]) + b"".join(envelopes))
    assert reply.status == 200 and reply.json()["accepted"] == n, reply.body
    return reply.json()["results"]


def checkpoint_root(node: NodeProcess, origin: str) -> tuple[int, str]:
    from ledger.checkpoint import open_checkpoint

    cp, _ = open_checkpoint(get(node.url, f"/v1/log/checkpoint?origin={origin}").body.decode(), bytes.fromhex(origin))
    return cp.size, cp.root.hex()



def test_previous_release_data_folder_opens_migrates_and_keeps_its_logs_and_policy(tmp_path, nodes):
    m = manifest()
    data = fixture_copy(tmp_path)
    assert m["schema_version"] <= len(MIGRATIONS)
    node = NodeProcess(data, env=node_env(m)).start()
    nodes.append(node)
    assert node.origin == m["node"]
    for origin, head in m["origins"].items():
        assert checkpoint_root(node, origin) == (head["size"], head["root"]), f"origin {origin[:12]} changed"
    balance = get(node.url, f"/v1/agents/{m['registered_agent']}/balance").json()
    assert m["registered_team"] in json.dumps(balance), "the release's agent.register must still count"
    receipt = submit(node, TestAgent())[0]
    assert receipt["index"] == m["origins"][m["node"]]["size"]
    assert node.stop() == 0
    assert not os.path.exists(os.path.join(data, "ledger.sqlite-wal")), "a clean stop leaves one self-contained file"
    assert schema_version(data) == len(MIGRATIONS)
    check = ats("verify-db", "--quiet", data)
    assert check.returncode == 0, check.stderr


MIGRATE_WITH_EXTRA = """
import sys
from node.store import schema
rows = int(sys.argv[2])
schema.MIGRATIONS = schema.MIGRATIONS + (
    "CREATE TABLE upgrade_probe (n INTEGER PRIMARY KEY, pad BLOB);"
    "INSERT INTO upgrade_probe WITH RECURSIVE c(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM c WHERE n < %d)"
    " SELECT n, randomblob(200) FROM c" % rows,
)
from node.store.sqlite import open_database
print("migrating", flush=True)
open_database(sys.argv[1]).close()
print("migrated", flush=True)
"""


def test_migration_killed_by_sigkill_rolls_back_whole_and_runs_again(tmp_path, nodes):
    m = manifest()
    data = fixture_copy(tmp_path)
    db = os.path.join(data, "ledger.sqlite")
    before = len(MIGRATIONS)
    # A slow extra migration (millions of rows in its one transaction), killed part-way.
    slow = subprocess.Popen([sys.executable, "-c", MIGRATE_WITH_EXTRA, db, "20000000"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        assert slow.stdout.readline().strip() == "migrating"
        def wal_bytes() -> int:
            return os.path.getsize(db + "-wal") if os.path.exists(db + "-wal") else 0

        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline and wal_bytes() < 8 * 2**20 and slow.poll() is None:
            time.sleep(0.05)  # until the uncommitted migration has spilled 8 MiB into the WAL
        assert slow.poll() is None, "the migration finished before it could be killed: make it slower"
        slow.send_signal(signal.SIGKILL)
        slow.wait(timeout=10)
    finally:
        if slow.poll() is None:
            slow.kill()
            slow.wait(timeout=10)
        slow.stdout.close()
        slow.stderr.close()
    with closing(sqlite3.connect(db)) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert "upgrade_probe" not in tables, "a killed migration must leave nothing behind"
        assert int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]) == before
    check = ats("verify-db", "--quiet", data)
    assert check.returncode == 0, check.stderr
    # Run again: the migration applies whole, from the version the kill left.
    done = subprocess.run([sys.executable, "-c", MIGRATE_WITH_EXTRA, db, "1000"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and "migrated" in done.stdout, done.stderr
    with closing(sqlite3.connect(db)) as conn:
        assert conn.execute("SELECT count(*) FROM upgrade_probe").fetchone() == (1000,)
        assert int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0]) == before + 1


def previous_release_code(tmp_path: Path) -> str:
    """The previous release's packages, from git (the commit in its fixture's manifest)."""
    commit = manifest()["commit"]
    run = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "ledger", "consensus", "node"],
                         capture_output=True, timeout=60)
    assert run.returncode == 0, (f"needs this repository's git history with the previous release {commit} "
                                 f"(git fetch --unshallow): {run.stderr.decode()}")
    code = tmp_path / "previous-release"
    with tarfile.open(fileobj=io.BytesIO(run.stdout)) as tar:
        tar.extractall(code, filter="data")
    return str(code)


def held(node: NodeProcess) -> dict[str, int]:
    return {o["origin"]: o["size"] for o in get(node.url, "/v1/cluster/digest").json()["origins"]}


def test_nodes_one_release_apart_replicate_both_ways(tmp_path, nodes, monkeypatch):
    m = manifest()
    code = previous_release_code(tmp_path)
    monkeypatch.chdir(tmp_path)  # `python -m node` of the old node must not see this tree on sys.path[0]
    old = NodeProcess(str(tmp_path / "old"), host="127.0.0.2", env={**node_env(m), "PYTHONPATH": code}).start()
    nodes.append(old)
    new = NodeProcess(str(tmp_path / "new"), host="127.0.0.3",
                      env={**node_env(m), "PYTHONPATH": str(ROOT), "ATS_PEERS": old.url}).start()
    nodes.append(new)
    agent = TestAgent()
    submit(old, agent, 5)
    submit(new, agent, 3)
    want = {old.origin: 5, new.origin: 3}
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if held(old) == want and held(new) == want:
            break
        time.sleep(0.2)
    else:
        peers = {name: get(n.url, "/v1/peers").json()["peers"] for name, n in (("old", old), ("new", new))}
        raise AssertionError(f"no replication across releases: old holds {held(old)}, new holds {held(new)}; "
                             f"peers: {json.dumps(peers)}")
    for origin, size in want.items():
        assert checkpoint_root(old, origin) == checkpoint_root(new, origin)
