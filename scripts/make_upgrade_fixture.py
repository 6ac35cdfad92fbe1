"""Make the upgrade fixture of a release: a data folder written by that release's own code.

    python scripts/make_upgrade_fixture.py --commit f28f7f6 --release 0.1.0

Extracts the release's `ledger/`, `consensus/` and `node/` with `git archive COMMIT` into a temp
folder and runs two of its nodes (`python -m node node`, PYTHONPATH at that folder) on 127.0.0.2
and 127.0.0.3, with one governance authority and open membership. It submits, over HTTP, policy
records (an agent registered on a plan in a team, the team put on a plan) and usage events of every
kind to both, waits until each holds both logs, stops them with SIGTERM, and copies node A's
`ledger.sqlite` and `node.key` to tests/fixtures/upgrade/<release>/ with a manifest.json of what
the current code must find there (origins, sizes, roots, the authority, the registered agent).
The envelopes are made with this tree's ledger/ code: the wire format did not change.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ledger.checkpoint import open_checkpoint  # noqa: E402
from tests.agentkit import TestAgent  # noqa: E402
from tests.integration.http import get, post_cbor  # noqa: E402
from tests.integration.nodeproc import NodeProcess  # noqa: E402


def extract(commit: str, dest: str) -> None:
    """The release's Python packages, from git, into dest."""
    blob = subprocess.run(["git", "-C", str(ROOT), "archive", commit, "ledger", "consensus", "node"],
                          capture_output=True, check=True, timeout=60).stdout
    with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
        tar.extractall(dest, filter="data")


def old_node(code: str, data: str, host: str, env: dict[str, str]) -> NodeProcess:
    """A node of the release in code (its PYTHONPATH), cwd outside this tree so nothing else is imported."""
    node = NodeProcess(data, host=host, env={**env, "PYTHONPATH": code})
    return node


def submit(node: NodeProcess, envelopes: list[bytes]) -> None:
    n = len(envelopes)
    header = bytes([0x80 + n]) if n < 24 else (b"\x98" + bytes([n]) if n < 256 else b"\x99" + n.to_bytes(2, "big"))
    reply = post_cbor(node.url, "/v1/events/batch", header + b"".join(envelopes))
    doc = reply.json()
    assert reply.status == 200 and doc["accepted"] == n, doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--release", required=True)
    args = ap.parse_args(argv)
    out = ROOT / "tests" / "fixtures" / "upgrade" / args.release
    work = tempfile.mkdtemp(prefix="ats-fixture-")
    nodes: list[NodeProcess] = []
    try:
        code = os.path.join(work, "code")
        extract(args.commit, code)
        authority = TestAgent(bytes(range(100, 132)))
        env = {"ATS_AUTHORITIES": authority.public_key.hex(), "ATS_OPEN_MEMBERSHIP": "true",
               "ATS_REPLICATION_INTERVAL_MS": "200", "ATS_DISCOVERY": "off"}
        cwd = os.getcwd()
        os.chdir(work)  # `python -m node` must find the release's package, not this tree's
        try:
            a = old_node(code, os.path.join(work, "a"), "127.0.0.2", env).start()
            nodes.append(a)
            b = old_node(code, os.path.join(work, "b"), "127.0.0.3", {**env, "ATS_PEERS": a.url}).start()
            nodes.append(b)
        finally:
            os.chdir(cwd)
        agents = [TestAgent(bytes([i]) * 32) for i in range(1, 4)]
        user = TestAgent(bytes([9]) * 32)
        registered = agents[0]
        submit(a, [
            authority.envelope("agent.register", {"agent": registered.public_key, "user": user.public_key,
                                                  "team": "research", "platform": "edge", "plan": "casual"}),
            authority.envelope("plan.assign", {"scope": "team", "id": "research", "plan": "premium"}),
        ])
        usage = []
        for i in range(60):
            agent = agents[i % 3]
            usage.append(agent.envelope("act", {"op": "llm.call", "cost": 1000 + i, "units": 10 + i}))
            if i % 10 == 0:
                usage.append(agent.envelope("dat", {"src": agent.public_key, "dst": user.public_key, "read": 100,
                                                    "written": 200, "dur": 5}))
                usage.append(agent.envelope("cpt", {"node": "gpu-1", "cpu": 10, "gpu": 2, "mem": 512, "jobs": 1}))
                usage.append(agent.envelope("trt", {"subject": agents[(i + 1) % 3].public_key, "type": "accuracy",
                                                    "value": 800, "halflife": 3_600_000}))
        submit(a, usage)
        submit(b, [agents[2].envelope("act", {"op": "tool.run", "cost": 50, "units": 1}) for _ in range(20)])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            sizes = [{o["origin"]: o["size"] for o in get(n.url, "/v1/cluster/digest").json()["origins"]} for n in nodes]
            if sizes[0] == sizes[1] and len(sizes[0]) == 2:
                break
            time.sleep(0.2)
        else:
            raise SystemExit(f"the release's nodes did not converge: {sizes}")
        origins = {}
        for origin, size in sizes[0].items():
            note = get(a.url, f"/v1/log/checkpoint?origin={origin}").body.decode()
            cp, _ = open_checkpoint(note, bytes.fromhex(origin))
            assert cp.size == size
            origins[origin] = {"size": size, "root": cp.root.hex()}
        for n in nodes:
            assert n.stop() == 0, n.stderr()
        out.mkdir(parents=True, exist_ok=True)
        # As the release leaves it: its clean stop closes the writer before the read-only readers,
        # so the WAL file stays beside the database; both are kept, as an operator would find them.
        for name in sorted(os.listdir(a.data_dir)):
            if name in ("ledger.sqlite", "ledger.sqlite-wal", "node.key"):
                shutil.copy2(os.path.join(a.data_dir, name), out / name)
        copy = os.path.join(work, "probe")
        os.makedirs(copy)
        for name in os.listdir(out):
            shutil.copy2(out / name, os.path.join(copy, name))
        with sqlite3.connect(os.path.join(copy, "ledger.sqlite")) as conn:
            version = int(conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()[0])
        manifest = {
            "release": args.release, "commit": subprocess.run(
                ["git", "-C", str(ROOT), "rev-parse", args.commit], capture_output=True, text=True, check=True
            ).stdout.strip(),
            "made_by": "scripts/make_upgrade_fixture.py", "schema_version": version, "node": a.origin,
            "peer": b.origin, "authority": authority.public_key.hex(), "registered_agent": registered.public_key.hex(),
            "registered_team": "research", "origins": origins,
        }
        (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        print(f"wrote {out}: {json.dumps(origins)}; "
              f"{sum(f.stat().st_size for f in out.iterdir()) // 1024} KiB")
    finally:
        for n in nodes:
            n.kill()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
