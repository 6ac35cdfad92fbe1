"""Worker processes (node/workers.py): batches checked in them, same answers, none outlives the node."""

import os
import signal
import threading
import time

import cbor2

from node.sdk.agent import cbor_array
from tests.agentkit import TestAgent
from tests.integration.http import post_cbor
from tests.integration.nodeproc import NodeProcess

WORKERS = 2


def descendants(pid: int) -> set[int]:
    """Every live process below pid (from /proc), zombies excluded."""
    children: dict[int, list[int]] = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            children.setdefault(int(fields[1]), []).append(int(name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def workers_of(pid: int) -> set[int]:
    """The node's worker processes (node/workers.py) among its live descendants."""
    out = set()
    for p in descendants(pid):
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if b"node.workers" in f.read():
                    out.add(p)
        except OSError:
            pass
    return out


def wait_for(predicate, seconds: float = 20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    return predicate()


def started(tmp_path, name: str) -> tuple[NodeProcess, set[int]]:
    node = NodeProcess(str(tmp_path / name), env={"ATS_VERIFY_PROCESSES": str(WORKERS)}).start()
    # its worker processes (children of the node, nothing else: no fork server, no resource tracker)
    procs = wait_for(lambda: (lambda d: d if len(d) >= WORKERS else None)(descendants(node.proc.pid)))
    assert procs and len(procs) == WORKERS, f"workers did not start: {procs}"
    return node, procs


def gone(pids: set[int]) -> bool:
    return not any(os.path.exists(f"/proc/{p}") and open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[0] != "Z"
                   for p in pids)


def test_batch_checked_in_workers_and_no_worker_outlives_sigkill(tmp_path):
    node, procs = started(tmp_path, "a")
    try:
        agent = TestAgent()
        envs = [agent.envelope("act", {"op": "llm.call", "cost": 10, "units": 1}) for _ in range(40)]
        doc = cbor2.loads(envs[7])
        doc["sig"] = bytes(64)  # a bad signature, found by a worker
        envs[7] = cbor2.dumps(doc)
        envs[9] = b"\xa1\x61x\x01"  # not an envelope: an error of its own
        reply = post_cbor(node.url, "/v1/events/batch", cbor_array(envs))
        assert reply.status == 200, reply.body
        answer = reply.json()
        assert answer["accepted"] == 38 and answer["errors"] == 2
        assert answer["results"][7]["error"]["code"] == "bad_signature"
        assert answer["results"][9]["error"]["code"] in ("unknown_field", "malformed_envelope")
        assert [r["index"] for r in answer["results"] if "index" in r] == list(range(38))
        again = post_cbor(node.url, "/v1/events/batch", cbor_array(envs)).json()
        assert again["duplicates"] == 38
    finally:
        node.kill(signal.SIGKILL)
    assert wait_for(lambda: gone(procs), 10), f"orphans after SIGKILL of the node: {procs}"


def test_sigterm_stops_the_workers_too(tmp_path):
    node, procs = started(tmp_path, "b")
    assert node.stop() == 0
    assert wait_for(lambda: gone(procs), 10), f"workers left after SIGTERM: {procs}"


def test_no_worker_outlives_a_sigkill_while_the_workers_start(tmp_path):
    """The race a CI run found: the node killed after a worker was spawned but before the worker
    asked the kernel to kill it with its parent (PR_SET_PDEATHSIG), while the dead node was not yet
    reaped. The worker sees it was handed to another parent and exits (or reads the end of its stdin)."""
    agent = TestAgent()
    body = cbor_array([agent.envelope("act", {"op": "llm.call", "cost": 1, "units": 1}) for _ in range(16)])
    for i in range(3):
        node = NodeProcess(str(tmp_path / f"r{i}"), env={"ATS_VERIFY_PROCESSES": str(WORKERS)}).start()
        sender = threading.Thread(target=lambda: _post_quietly(node.url, body), daemon=True)
        sender.start()  # the batch makes the pool spawn its workers
        procs = wait_for(lambda: (lambda d: d if len(d) >= 2 else None)(descendants(node.proc.pid)), 10) or set()
        node.proc.send_signal(signal.SIGKILL)  # at once, before the workers finish starting; not reaped yet
        time.sleep(0.5)
        procs |= descendants(node.proc.pid)
        node.kill()
        sender.join(10)
        assert procs, "the batch did not start the workers"
        assert wait_for(lambda: gone(procs), 10), f"orphans after SIGKILL during the workers' start: {procs}"


def _post_quietly(url: str, body: bytes) -> None:
    try:
        post_cbor(url, "/v1/events/batch", body)
    except Exception:  # the node is killed under it: no answer is expected
        pass


def test_single_events_checked_in_a_worker_and_a_killed_worker_is_replaced(tmp_path):
    """A single CBOR event is parsed and verified in a worker (same answers as in the node's own
    process); a worker killed under the node is replaced, and the node goes on accepting."""
    node = NodeProcess(str(tmp_path / "s"), env={"ATS_VERIFY_PROCESSES": "1", "ATS_SINGLES_INLINE_MAX": "0"}).start()
    try:
        (worker,) = wait_for(lambda: workers_of(node.proc.pid))
        agent = TestAgent()
        good = agent.envelope("act", {"op": "llm.call", "cost": 3, "units": 1})
        first = post_cbor(node.url, "/v1/events", good)
        assert first.status == 201, first.body
        assert post_cbor(node.url, "/v1/events", good).json()["status"] == "duplicate"
        doc = cbor2.loads(agent.envelope("act", {"op": "llm.call", "cost": 3, "units": 1}))
        doc["sig"] = bytes(64)
        bad = post_cbor(node.url, "/v1/events", cbor2.dumps(doc))
        assert bad.json()["error"]["code"] == "bad_signature"
        assert post_cbor(node.url, "/v1/events", b"\xa1\x61x\x01").json()["error"]["code"] in (
            "unknown_field", "malformed_envelope")
        os.kill(worker, signal.SIGKILL)
        replaced = wait_for(lambda: (lambda d: d if d and worker not in d else None)(workers_of(node.proc.pid)))
        assert replaced and worker not in replaced, f"no new worker after the old one was killed: {replaced}"
        statuses = [post_cbor(node.url, "/v1/events", agent.envelope("act", {"op": "llm.call", "cost": 1, "units": 1})).status
                    for _ in range(5)]
        assert statuses == [201] * 5, statuses
    finally:
        node.kill(signal.SIGKILL)
