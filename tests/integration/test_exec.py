"""`ats exec`: the task meter (docs/gateway.md), on a real node, with real child processes.

Each child measures itself with the kernel's own counters (getrusage, /proc/self/io) and writes
them to a file; the figures `ats exec` recorded (its summary line, and the node-signed events
read back from the node) must match them. The cgroup v2 path is used when the machine allows it
(root here), else rusage and /proc.
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from ledger.governance import DEFAULT_PRICES
from ledger.pricing import task_cost_milli
from node.keys import write_key
from tests.agentkit import TestAgent
from tests.integration.http import get, post_cbor
from tests.integration.nodeproc import NodeProcess

pytestmark = pytest.mark.integration
AUTH = TestAgent(bytes([1]) * 32)
USER = TestAgent(bytes([10]) * 32)

BUSY = """
import resource, sys, time
t = time.process_time()
while time.process_time() - t < {seconds}:
    pass
ru = resource.getrusage(resource.RUSAGE_SELF)
open(sys.argv[1], "w").write(str(int((ru.ru_utime + ru.ru_stime) * 1000)))
"""
HUNGRY = """
import resource, sys
block = bytearray(150 * 1024 * 1024)
for i in range(0, len(block), 4096):
    block[i] = 1
open(sys.argv[1], "w").write(str(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""
WRITER = """
import subprocess, sys
subprocess.run(["sh", "-c", "head -c 4000000 /dev/zero > " + sys.argv[2] + "; sleep 0.3"], check=True)
with open(sys.argv[2] + ".2", "wb") as f:
    f.write(b"y" * 1000000)
io = dict(line.split(":") for line in open("/proc/self/io").read().splitlines())
open(sys.argv[1], "w").write(io["wchar"].strip())
"""


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    env = {"ATS_AUTHORITIES": AUTH.public_key.hex()}
    with NodeProcess(str(tmp_path_factory.mktemp("exec") / "node"), env=env) as n:
        yield n


def _agent(tmp_path, node, **limits: Any) -> tuple[TestAgent, str]:
    agent = TestAgent()
    key = str(tmp_path / "agent.key")
    write_key(key, agent.seed)
    if limits:
        body = {"agent": agent.public_key, "user": USER.public_key, "team": "t", "platform": "p", "plan": "premium", **limits}
        assert post_cbor(node.url, "/v1/events", AUTH.envelope("agent.register", body)).status == 201
    return agent, key


def _exec(node, key: str, *argv: str, estimate: int | None = None, cgroup: bool = True) -> tuple[int, dict[str, Any], str]:
    cmd = [sys.executable, "-m", "node", "exec", "--key", key, "--url", node.url, "--interval-ms", "50"]
    if not cgroup:
        cmd.append("--no-cgroup")
    if estimate is not None:
        cmd += ["--estimate", str(estimate)]
    proc = subprocess.run(cmd + ["--", *argv], capture_output=True, text=True, timeout=60)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("ats exec: {")]
    summary = json.loads(lines[-1][len("ats exec: "):]) if lines else {}
    return proc.returncode, summary, proc.stderr


def _events(node, agent: TestAgent) -> dict[str, dict[str, Any]]:
    doc = get(node.url, f"/v1/agents/{agent.public_key.hex()}/usage").json()
    return {e["kind"]: e for e in doc["events"]}


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup2-if-possible", "rusage"])
def test_cpu_bound_child_is_charged_the_cpu_time_the_kernel_counted(node, tmp_path, cgroup):
    agent, key = _agent(tmp_path, node)
    report = tmp_path / "cpu"
    code, s, err = _exec(node, key, sys.executable, "-c", BUSY.format(seconds=1.2), str(report), cgroup=cgroup)
    assert code == 0, err
    assert s["measured_by"] == ("rusage" if not cgroup else s["measured_by"])
    own_ms = int(report.read_text())
    assert own_ms <= s["cpu_ms"] <= own_ms + 300  # the child's own count, plus its last instructions and exit
    events = _events(node, agent)
    assert events["cpt"]["body"]["cpu"] == -(-s["cpu_ms"] // 1000) and events["cpt"]["signer"] == node.origin
    assert events["cpt"]["body"]["agent"] == agent.public_key.hex()
    assert events["act"]["body"]["op"] == "agent.run"
    assert events["act"]["body"]["cost"] == s["cost"] == task_cost_milli(DEFAULT_PRICES, s["cpu_ms"], s["read"], s["written"])
    runs = get(node.url, f"/v1/agents/{agent.public_key.hex()}/balance").json()["budgets"]
    assert next(b for b in runs if b["metric"] == "act.runs" and b["scope"] == "agent")["consumed"] == 1


def test_memory_hungry_child_is_charged_its_peak(node, tmp_path):
    agent, key = _agent(tmp_path, node)
    report = tmp_path / "mem"
    code, s, err = _exec(node, key, sys.executable, "-c", HUNGRY, str(report))
    assert code == 0, err
    own_mb = int(report.read_text()) // 1024
    assert own_mb >= 150 and own_mb <= s["mem_mb"] <= own_mb * 1.2 + 16
    assert _events(node, agent)["cpt"]["body"]["mem"] == s["mem_mb"]


def test_child_that_writes_files_is_charged_its_bytes_with_its_descendants(node, tmp_path):
    agent, key = _agent(tmp_path, node)
    report = tmp_path / "io"
    code, s, err = _exec(node, key, sys.executable, "-c", WRITER, str(report), str(tmp_path / "out"))
    assert code == 0, err
    own = int(report.read_text())  # the child's wchar, its reaped grandchild's included
    assert own >= 5_000_000 and own <= s["written"] <= own + 4096  # plus the report it wrote after reading
    dat = _events(node, agent)["dat"]["body"]
    assert (dat["written"], dat["read"], dat["agent"]) == (s["written"], s["read"], agent.public_key.hex())
    assert s["jobs"] >= 2  # the child and its grandchild ran at once


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup2-if-possible", "rusage"])
def test_task_past_max_cost_per_run_is_killed_and_charged(node, tmp_path, cgroup):
    agent, key = _agent(tmp_path, node, max_cost_per_run=1500)
    code, s, err = _exec(node, key, sys.executable, "-c", BUSY.format(seconds=20), str(tmp_path / "never"),
                         estimate=1000, cgroup=cgroup)
    assert code == 128 + 9 and s["killed_for_cost"] and "max_cost_per_run 1500" in err
    assert s["cpu_ms"] < 6000 and s["cost"] > 1500  # killed within a sample of passing the limit
    assert _events(node, agent)["act"]["body"]["cost"] == s["cost"]


def test_task_the_budget_refuses_never_starts(node, tmp_path):
    agent, key = _agent(tmp_path, node)
    marker = tmp_path / "ran"
    code, s, err = _exec(node, key, "sh", "-c", f"touch {marker}", estimate=10**12)
    assert code == 1 and "budget_exceeded" in err and not marker.exists() and s == {}
    assert _events(node, agent) == {}


@pytest.mark.parametrize("script, expect", [("exit 7", 7), ("kill -TERM $$", 128 + 15)])
def test_exit_codes_and_signals_pass_through(node, tmp_path, script, expect):
    _agent_, key = _agent(tmp_path, node)
    code, s, _err = _exec(node, key, "sh", "-c", script)
    assert code == expect == s["exit_code"]


def test_only_the_agent_that_reserved_a_task_settles_it(node, tmp_path):
    import time
    import urllib.error
    import urllib.request

    from ledger.credentials import mint

    def post(path: str, seed: bytes, body: dict[str, Any] | bytes) -> tuple[int, dict[str, Any]]:
        token = mint(seed, now_s=int(time.time()), ttl_s=600)
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        req = urllib.request.Request(node.url + path, data=data, method="POST",
                                     headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read())

    owner, other = TestAgent(), TestAgent()
    status, task = post("/v1/tasks", owner.seed, {"estimate": 100})
    assert status == 201
    assert post(f"/v1/tasks/{task['task']}", other.seed, {"cpu_ms": 1})[1]["error"]["code"] == "task_not_found"
    assert post(f"/v1/tasks/{'00' * 16}", owner.seed, {})[1]["error"]["code"] == "task_not_found"
    status, settled = post(f"/v1/tasks/{task['task']}", owner.seed, {"cpu_ms": 1500, "written": 2048})
    assert status == 200 and settled["cost"] == 2 * 1000 + 2
    assert post(f"/v1/tasks/{task['task']}", owner.seed, {})[0] == 404  # settled once
    # bad bodies: JSON nested past the parser's recursion (within the 4 KiB bound), and not JSON
    for bad in (b"[" * 2000 + b"]" * 2000, b"{not json"):
        status, doc = post("/v1/tasks", owner.seed, bad)
        assert (status, doc["error"]["code"]) == (400, "malformed_json")


def test_sdk_runs_a_metered_task_for_a_scheduler(node, tmp_path):
    from node.sdk.task import run_metered

    agent = TestAgent()
    usage, settled = run_metered(node.url, agent.seed, ["sh", "-c", "exit 3"], estimate=500)
    assert usage.exit_code == 3 and settled["reserved"] == 500 and len(settled["events"]) == 3
    assert _events(node, agent)["act"]["body"]["cost"] == settled["cost"]
