"""The real `ats` command line against real node processes: keygen, submit, checkpoint, audit."""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys

import pytest

from ledger.checkpoint import Checkpoint, open_checkpoint, sign_checkpoint
from node.keys import read_key

pytestmark = pytest.mark.integration

CLI_TIMEOUT_S = 30
ACT = '{"op": "llm.call", "cost": 3200, "units": 40}'


def ats(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "ATS_URL": "http://127.0.0.1:9"}  # no accidental default node
    return subprocess.run(
        [sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=CLI_TIMEOUT_S, env=env
    )


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def agent_key(tmp_path):
    path = str(tmp_path / "agent.key")
    assert ats("keygen", path).returncode == 0
    return path


def vkey_of(node) -> str:
    import urllib.request

    with urllib.request.urlopen(f"{node.url}/v1/node", timeout=5) as resp:
        return json.load(resp)["vkey"]


def submit(node, key: str, body: str = ACT, kind: str = "act") -> dict:
    run = ats("submit", kind, "--key", key, "--url", node.url, "--body", body, "--json")
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


def test_keygen_writes_0600_file_and_refuses_to_overwrite(tmp_path):
    path = str(tmp_path / "k.json")
    first = ats("keygen", path)
    assert first.returncode == 0
    public_key = first.stdout.strip()
    assert len(public_key) == 64
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    seed = read_key(path)
    refused = ats("keygen", path)
    assert refused.returncode == 2 and "--force" in refused.stderr
    assert read_key(path) == seed
    forced = ats("keygen", path, "--force")
    assert forced.returncode == 0 and forced.stdout.strip() != public_key


def test_submit_prints_receipt_and_reports_refusals(node, agent_key, tmp_path):
    receipt = submit(node, agent_key)
    assert (receipt["status"], receipt["index"], receipt["origin"]) == ("accepted", 0, node.origin)
    dat = '{"src": "%s", "dst": "%s", "read": 10, "written": 20, "dur": 5}' % ("ab" * 32, "cd" * 32)
    assert submit(node, agent_key, dat, "dat")["index"] == 1
    stale = ats("submit", "act", "--key", agent_key, "--url", node.url, "--body", ACT, "--ts", "1")
    assert stale.returncode == 1 and stale.stderr.startswith("ats: stale_timestamp: ")
    missing = ats("submit", "act", "--key", str(tmp_path / "nope"), "--url", node.url, "--body", ACT)
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    bad_hex = ats("submit", "dat", "--key", agent_key, "--url", node.url, "--body", '{"src": "zz"}')
    assert bad_hex.returncode == 2 and "hex digits" in bad_hex.stderr


def test_checkpoint_prints_note_and_verified_line(node, agent_key):
    submit(node, agent_key)
    run = ats("checkpoint", "--url", node.url, "--vkey", vkey_of(node))
    assert run.returncode == 0, run.stderr
    last = run.stdout.splitlines()[-1]
    assert last.startswith(f"verified: origin ats-ledger/{node.origin} size 1 root ")
    note = run.stdout[: run.stdout.rindex("verified: ")]
    cp, _ = open_checkpoint(note, bytes.fromhex(node.origin))
    assert last.endswith(cp.root.hex())
    tofu = ats("checkpoint", "--url", node.url)
    assert tofu.returncode == 0 and "trust on first use" in tofu.stderr


def test_audit_proves_inclusion_then_consistency_from_saved_checkpoint(node, agent_key, tmp_path):
    vkey, saved = vkey_of(node), str(tmp_path / "cp.note")
    ids = [submit(node, agent_key)["id"] for _ in range(3)]
    first = ats("audit", "--url", node.url, "--vkey", vkey, "--id", ids[0], "--id", ids[2], "--save", saved)
    assert first.returncode == 0, first.stdout + first.stderr
    assert f"ok   inclusion {ids[0]} index 0 size 3" in first.stdout
    assert f"ok   inclusion {ids[2]} index 2 size 3" in first.stdout
    more = [submit(node, agent_key)["id"] for _ in range(2)]
    second = ats("audit", "--url", node.url, "--vkey", vkey, "--since", saved, "--id", more[1], "--save", saved)
    assert second.returncode == 0, second.stdout + second.stderr
    assert "ok   consistency 3 -> 5" in second.stdout
    assert f"ok   inclusion {more[1]} index 4 size 5" in second.stdout
    assert "FAIL" not in second.stdout
    with open(saved) as f:
        assert open_checkpoint(f.read(), bytes.fromhex(node.origin))[0].size == 5


def test_audit_fails_with_another_nodes_key(node, make_node, agent_key, tmp_path):
    other = make_node("other").start()
    submit(node, agent_key)
    saved = str(tmp_path / "never.note")
    run = ats("audit", "--url", node.url, "--vkey", vkey_of(other), "--save", saved)
    assert run.returncode == 1
    assert run.stdout.startswith("FAIL checkpoint: ")
    assert not os.path.exists(saved)  # a failed audit never becomes the next --since
    checkpoint = ats("checkpoint", "--url", node.url, "--vkey", vkey_of(other))
    assert checkpoint.returncode == 1 and "FAIL checkpoint" in checkpoint.stdout


def test_audit_fails_on_saved_checkpoint_with_altered_signature(node, agent_key, tmp_path):
    vkey, saved = vkey_of(node), str(tmp_path / "cp.note")
    submit(node, agent_key)
    assert ats("audit", "--url", node.url, "--vkey", vkey, "--save", saved).returncode == 0
    with open(saved) as f:
        note = f.read()
    sig_line = note.rstrip("\n").rsplit("\n", 1)[1]
    b64 = sig_line.rsplit(" ", 1)[1]
    flipped = b64[:10] + ("A" if b64[10] != "A" else "B") + b64[11:]
    with open(saved, "w") as f:
        f.write(note.replace(b64, flipped))
    submit(node, agent_key)
    run = ats("audit", "--url", node.url, "--vkey", vkey, "--since", saved)
    assert run.returncode == 1
    assert f"FAIL since {saved}: checkpoint does not verify: bad_signature" in run.stdout


def test_audit_fails_consistency_from_forged_checkpoint_signed_with_node_key(node, agent_key, tmp_path):
    vkey, saved = vkey_of(node), str(tmp_path / "cp.note")
    for _ in range(2):
        submit(node, agent_key)
    assert ats("audit", "--url", node.url, "--vkey", vkey, "--save", saved).returncode == 0
    with open(saved) as f:
        real, _ = open_checkpoint(f.read(), bytes.fromhex(node.origin))
    # The node's own key signs a fork: same size, another root. The signature is
    # valid, so only the consistency proof can catch it.
    seed = read_key(os.path.join(node.data_dir, "node.key"))
    forged = Checkpoint(real.origin, real.size, bytes(32))
    with open(saved, "w") as f:
        f.write(sign_checkpoint(forged, seed))
    same_size = ats("audit", "--url", node.url, "--vkey", vkey, "--since", saved)
    assert same_size.returncode == 1 and "FAIL consistency 2 -> 2: " in same_size.stdout
    submit(node, agent_key)
    grown = ats("audit", "--url", node.url, "--vkey", vkey, "--since", saved)
    assert grown.returncode == 1
    assert "FAIL consistency 2 -> 3: the log at size 2 is not a prefix" in grown.stdout


def test_audit_fails_on_unknown_event_id(node, agent_key):
    submit(node, agent_key)
    unknown = "00" * 32
    run = ats("audit", "--url", node.url, "--vkey", vkey_of(node), "--id", unknown)
    assert run.returncode == 1
    assert f"FAIL inclusion {unknown}: " in run.stdout and "event_not_found" in run.stdout


def test_unreachable_node_exits_3(agent_key):
    url = f"http://127.0.0.1:{closed_port()}"
    for args in (("checkpoint", "--url", url), ("audit", "--url", url),
                 ("submit", "act", "--key", agent_key, "--url", url, "--body", ACT)):
        run = ats(*args)
        assert run.returncode == 3, (args, run.stderr)
        assert "cannot reach the node" in run.stderr
