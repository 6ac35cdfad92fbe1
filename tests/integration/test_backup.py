"""`ats backup` under load and `ats restore` that refuses to fork a node's log, with real nodes."""

from __future__ import annotations

import hashlib
from contextlib import closing
import os
import shutil
import sqlite3
import subprocess
import sys
import threading
import time

import pytest

from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor
from tests.integration.nodeproc import NodeProcess

pytestmark = pytest.mark.integration

OPEN = {"ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "200", "ATS_BUDGETS": "false"}
WAIT_S = 30


def ats(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def batch(envelopes: list[bytes]) -> bytes:
    """A canonical CBOR array of already-encoded envelopes (the header in shortest form, RFC 8949 §4.2.1)."""
    n = len(envelopes)
    header = bytes([0x80 + n]) if n < 24 else (b"\x98" + bytes([n]) if n < 256 else b"\x99" + n.to_bytes(2, "big"))
    return header + b"".join(envelopes)


def submit(node: NodeProcess, agent: TestAgent, n: int) -> None:
    for start in range(0, n, 256):  # batch_events_max
        k = min(256, n - start)
        reply = post_cbor(node.url, "/v1/events/batch", batch([agent.envelope() for _ in range(k)]))
        assert reply.status == 200 and reply.json()["accepted"] == k, reply.body


def size_of(node: NodeProcess) -> int:
    return get(node.url, "/v1/node").json()["size"]


def held_by(node: NodeProcess, origin: str) -> int:
    for o in get(node.url, "/v1/cluster/digest").json()["origins"]:
        if o["origin"] == origin:
            return o["size"]
    return 0


def wait_for(cond, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def digest_of(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()



def test_backup_of_a_node_under_load_is_consistent_and_verifies(tmp_path, nodes):
    node = NodeProcess(str(tmp_path / "a"), env=OPEN).start()
    nodes.append(node)
    agent = TestAgent()
    submit(node, agent, 500)
    stop = threading.Event()
    errors: list[BaseException] = []

    def load() -> None:
        try:
            for _ in range(400):  # bounded: at most 400 batches
                if stop.is_set():
                    return
                submit(node, agent, 50)
        except BaseException as e:  # noqa: BLE001 - reported by the test
            errors.append(e)

    writer = threading.Thread(target=load)
    writer.start()
    try:
        wait_for(lambda: size_of(node) > 1000, "load to start")
        copies = [str(tmp_path / f"b{i}.sqlite") for i in range(2)]
        for dest in copies:
            run = ats("backup", dest, "--data-dir", node.data_dir)
            assert run.returncode == 0, run.stderr
            assert "verified" in run.stdout
    finally:
        stop.set()
        writer.join(timeout=60)
    assert not errors, errors
    sizes = []
    for dest in copies:
        assert ats("verify-db", "--quiet", str(tmp_path / "v")).returncode == 2  # no ledger there: the check is real
        os.makedirs(tmp_path / "v", exist_ok=True)
        os.replace(dest, tmp_path / "v" / "ledger.sqlite")
        check = ats("verify-db", "--quiet", str(tmp_path / "v"))
        assert check.returncode == 0, check.stderr
        sizes.append(int(check.stdout.split("verified ")[1].split()[0]))
        os.remove(tmp_path / "v" / "ledger.sqlite")
        assert not os.path.exists(dest + "-wal"), "a backup is one self-contained file"
    assert 1000 < sizes[0] <= sizes[1] <= size_of(node)


def test_backup_refuses_bad_destinations_and_leaves_nothing_behind(tmp_path, nodes):
    node = NodeProcess(str(tmp_path / "a"), env=OPEN).start()
    nodes.append(node)
    missing_dir = ats("backup", str(tmp_path / "no" / "such" / "b.sqlite"), "--data-dir", node.data_dir)
    assert missing_dir.returncode == 2 and "cannot write the backup" in missing_dir.stderr
    (tmp_path / "exists.sqlite").write_text("keep me")
    exists = ats("backup", str(tmp_path / "exists.sqlite"), "--data-dir", node.data_dir)
    assert exists.returncode == 2 and "--force" in exists.stderr
    assert (tmp_path / "exists.sqlite").read_text() == "keep me"
    no_ledger = ats("backup", str(tmp_path / "x.sqlite"), "--data-dir", str(tmp_path / "empty"))
    assert no_ledger.returncode == 2 and "no ledger" in no_ledger.stderr
    assert sorted(os.listdir(tmp_path)) == sorted(["a", "a.stderr", "exists.sqlite"])


def test_restore_refuses_bad_sources_and_a_running_node(tmp_path, nodes):
    node = NodeProcess(str(tmp_path / "a"), env=OPEN).start()
    nodes.append(node)
    assert ats("backup", str(tmp_path / "b.sqlite"), "--data-dir", node.data_dir).returncode == 0
    text = tmp_path / "notes.txt"
    text.write_text("not a database\n")
    not_db = ats("restore", str(text), "--data-dir", node.data_dir)
    assert not_db.returncode == 2 and "not an SQLite database" in not_db.stderr
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    not_ledger = ats("restore", str(other), "--data-dir", node.data_dir)
    assert not_ledger.returncode == 2 and "not an ATS ledger" in not_ledger.stderr
    running = ats("restore", str(tmp_path / "b.sqlite"), "--data-dir", node.data_dir)
    assert running.returncode == 1 and "in use" in running.stderr and "stop the node" in running.stderr
    assert size_of(node) == 0  # still serving, nothing changed


def test_restore_of_an_old_copy_is_refused_while_a_peer_holds_more_then_allowed_with_a_new_key(tmp_path, nodes):
    a = NodeProcess(str(tmp_path / "a"), host="127.0.0.2", env=OPEN).start()
    nodes.append(a)
    b = NodeProcess(str(tmp_path / "b"), host="127.0.0.3", env={**OPEN, "ATS_PEERS": a.url}).start()
    nodes.append(b)
    agent = TestAgent()
    submit(a, agent, 20)
    wait_for(lambda: held_by(b, a.origin) == 20, "b to hold a's 20 events")
    old = str(tmp_path / "old.sqlite")
    assert ats("backup", old, "--data-dir", a.data_dir).returncode == 0
    # the same size as the peer holds: restoring it is safe
    assert a.stop() == 0
    same = ats("restore", old, "--data-dir", a.data_dir, "--peer", b.url)
    assert same.returncode == 0, same.stderr
    a.start()
    assert a.origin == held_by_origin(b, a.origin) and size_of(a) == 20
    submit(a, agent, 5)
    wait_for(lambda: held_by(b, a.origin) == 25, "b to hold a's 25 events")
    assert a.stop() == 0
    ledger = os.path.join(a.data_dir, "ledger.sqlite")
    before = digest_of(ledger)
    refused = ats("restore", old, "--data-dir", a.data_dir, "--peer", b.url)
    assert refused.returncode == 1, refused.stderr
    assert "holds 25 events of this node's log; the copy holds 20" in refused.stderr
    assert "--new-key" in refused.stderr and "Nothing was changed" in refused.stderr
    assert digest_of(ledger) == before
    unreachable = ats("restore", old, "--data-dir", a.data_dir, "--peer", "http://127.0.0.1:9")
    assert unreachable.returncode == 1 and "unreachable" in unreachable.stderr
    # the first safe path: catch up from the peer: its ledger holds all 25 events of a's log
    from_peer = str(tmp_path / "from-b.sqlite")
    assert ats("backup", from_peer, "--quick", "--data-dir", b.data_dir).returncode == 0
    caught_up = ats("restore", from_peer, "--data-dir", a.data_dir, "--peer", b.url, "--quick")
    assert caught_up.returncode == 0, caught_up.stderr
    a.start()
    assert size_of(a) == 25
    submit(a, agent, 1)
    wait_for(lambda: held_by(b, a.origin) == 26, "b to take a's next event: no fork")
    assert get(b.url, "/v1/forks").json()["forks"] == []
    assert a.stop() == 0
    # the second safe path: a new key
    fresh = ats("restore", old, "--data-dir", a.data_dir, "--peer", b.url, "--new-key")
    assert fresh.returncode == 0, fresh.stderr
    old_origin = a.origin
    a.start()
    assert a.origin != old_origin and size_of(a) == 0
    origins = {o["origin"]: o["size"] for o in get(a.url, "/v1/cluster/digest").json()["origins"]}
    assert origins[old_origin] == 20, "the old log stays, as another origin"
    wait_for(lambda: held_by(a, old_origin) == 26, "the new node to fetch the rest of the old log from b")
    assert any(name.startswith("node.key.before-restore-") for name in os.listdir(a.data_dir))


def held_by_origin(node: NodeProcess, origin: str) -> str:
    return origin if held_by(node, origin) else ""


def test_litestream_continuous_backup_to_s3_restores_a_node_lost_to_sigkill(tmp_path, nodes):
    from tests.integration import litestreamkit

    node = NodeProcess(str(tmp_path / "a"), env=OPEN).start()
    nodes.append(node)
    db = os.path.join(node.data_dir, "ledger.sqlite")
    config = str(tmp_path / "litestream.yml")
    agent = TestAgent()
    submit(node, agent, 100)
    with litestreamkit.s3_server() as endpoint:
        with open(config, "w") as f:
            f.write(litestreamkit.config_text(db, endpoint))
        with litestreamkit.replicating(config, str(tmp_path / "litestream.log")):
            for _ in range(5):
                submit(node, agent, 100)
            out = str(tmp_path / "restored.sqlite")

            def replicated() -> bool:
                for p in (out, out + "-wal", out + "-shm"):
                    if os.path.exists(p):
                        os.remove(p)
                if litestreamkit.restore(config, db, out).returncode != 0:
                    return False
                with closing(sqlite3.connect(out)) as conn:
                    return conn.execute("SELECT max(size) FROM origins").fetchone()[0] == 600

            wait_for(replicated, "litestream to hold all 600 events")
        node.kill()  # the machine is lost: only the bucket and the key remain
        os.remove(out)
        t0 = time.monotonic()
        got = litestreamkit.restore(config, db, out)
        restore_s = time.monotonic() - t0
        assert got.returncode == 0, got.stderr
    fresh = tmp_path / "fresh"
    fresh.mkdir()
    os.replace(os.path.join(node.data_dir, "node.key"), fresh / "node.key")
    put = ats("restore", out, "--data-dir", str(fresh))
    assert put.returncode == 0, put.stderr
    back = NodeProcess(str(fresh), env=OPEN).start()
    nodes.append(back)
    assert back.origin == node.origin and size_of(back) == 600
    print(f"litestream restore of 600 events from S3 (moto on loopback): {restore_s:.2f} s")


def test_quick_check_still_finds_a_changed_entry_and_restore_refuses_it(tmp_path, nodes):
    node = NodeProcess(str(tmp_path / "a"), env=OPEN).start()
    nodes.append(node)
    submit(node, TestAgent(), 30)
    copy = str(tmp_path / "b.sqlite")
    made = ats("backup", copy, "--quick", "--data-dir", node.data_dir)
    assert made.returncode == 0, made.stderr
    assert node.stop() == 0
    with closing(sqlite3.connect(copy)) as conn:
        (envelope,) = conn.execute("SELECT envelope FROM entries WHERE idx = 17").fetchone()
        tampered = envelope[:-1] + bytes([envelope[-1] ^ 1])  # one bit of the signature
        conn.execute("UPDATE entries SET envelope = ? WHERE idx = 17", (tampered,))
        conn.commit()
    ledger = os.path.join(node.data_dir, "ledger.sqlite")
    before = digest_of(ledger)
    for flags in (["--quick"], []):
        refused = ats("restore", copy, "--data-dir", node.data_dir, *flags)
        assert refused.returncode == 1 and "does not verify" in refused.stderr, (flags, refused.stderr)
    assert "idx=17" in refused.stderr  # the changed entry is named
    assert digest_of(ledger) == before


def test_restore_into_an_empty_folder_starts_writable_and_a_copy_behind_the_superblock_is_refused(tmp_path, nodes):
    """The superblock (node/superblock.py) and restore: a machine lost whole comes back from its
    backup and key writable (restore writes the superblock of the copy); a copy behind what this
    node signed is refused even when no peer can be asked (the node's own record says so)."""
    node = NodeProcess(str(tmp_path / "a"), env=OPEN).start()
    nodes.append(node)
    agent = TestAgent()
    submit(node, agent, 10)
    copy = str(tmp_path / "copy.sqlite")
    assert ats("backup", copy, "--data-dir", node.data_dir).returncode == 0
    submit(node, agent, 5)
    assert node.stop() == 0
    refused = ats("restore", copy, "--data-dir", node.data_dir, "--allow-unreachable")
    assert refused.returncode == 1 and "signed a checkpoint at size 15, the copy holds 10" in refused.stderr, refused.stderr
    # the machine is lost: only the backup and the node key survive
    lost = tmp_path / "new"
    lost.mkdir()
    shutil.copy(os.path.join(node.data_dir, "node.key"), lost / "node.key")
    os.chmod(lost / "node.key", 0o600)
    back = ats("restore", copy, "--data-dir", str(lost), "--allow-unreachable")
    assert back.returncode == 0, back.stderr
    again = NodeProcess(str(lost), env=OPEN).start()
    nodes.append(again)
    assert again.origin == node.origin and size_of(again) == 10
    assert get(again.url, "/healthz").status == 200
    submit(again, agent, 1)
    assert size_of(again) == 11
