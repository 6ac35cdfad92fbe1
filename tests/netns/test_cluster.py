"""The netns harness itself, with real nodes: namespaces, reachability, cuts, crashes, cleanup."""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

from tests.agentkit import TestAgent
from tests.netns.cluster import Cluster, ClusterError, Unreachable, netns_list
from tests.netns.conftest import require_netns

pytestmark = pytest.mark.netns

FAIL_S = 1.5  # client timeout for requests expected to fail across a cut


def ok(c: Cluster, i: int, *, via: int | None = None) -> bool:
    """Node i answers GET /healthz (from the hub, or from node via's namespace)."""
    try:
        status, _, body = c.request(i, "GET", "/healthz", via=via, timeout=5)
    except Unreachable:
        return False
    return status == 200 and json.loads(body)["status"] == "ok"


def blocked(c: Cluster, i: int, *, via: int) -> bool:
    """A request from node via to node i gets no answer, and fails within a bounded time."""
    t0 = time.monotonic()
    try:
        c.request(i, "GET", "/healthz", via=via, timeout=FAIL_S)
    except Unreachable as e:
        assert time.monotonic() - t0 < FAIL_S + 5
        return "timed out" in str(e)  # dropped silently: no refusal, no ICMP
    return False


def host_state() -> tuple[list[str], list[str]]:
    """`ip netns list` and the root namespace's `ip -o link`.

    Namespaces named ats<pid>... of another live process (a concurrent test run) are left out."""
    links = subprocess.run(["ip", "-o", "link", "show"], capture_output=True, text=True, check=True).stdout
    names = [ns for ns in netns_list() if not ((m := re.match(r"ats(\d+)", ns)) and int(m.group(1)) != os.getpid()
                                                and os.path.exists(f"/proc/{m.group(1)}"))]
    return names, links.splitlines()


def test_three_nodes_start_in_their_namespaces_and_answer_from_the_hub(cluster):
    c = cluster(3)
    names = netns_list()
    assert c.hub in names
    for i, node in enumerate(c.nodes):
        assert node.ns in names and node.url == f"http://10.213.0.{i + 2}:8470"
        assert len(node.origin) == 64 and node.size == 0
        assert ok(c, i)
        rx, tx = c.counters(i)
        assert rx > 0 and tx > 0
        addrs = subprocess.run(["ip", "-n", node.ns, "-o", "-4", "addr", "show", "dev", node.ifname],
                               capture_output=True, text=True, check=True).stdout
        assert f"inet {node.addr}/16" in addrs
    assert len({n.origin for n in c.nodes}) == 3


def test_pairwise_cut_drops_only_that_pair_and_heal_restores_it(cluster):
    c = cluster(3)
    assert ok(c, 1, via=0) and ok(c, 0, via=1)
    c.cut(0, 1)
    assert c.cuts == [(0, 1)]
    assert blocked(c, 1, via=0) and blocked(c, 0, via=1)
    assert ok(c, 2, via=0) and ok(c, 0, via=2) and ok(c, 1, via=2)
    assert ok(c, 0) and ok(c, 1)  # the hub is never cut
    rx1 = c.counters(1)[0]
    tx0 = c.counters(0)[1]
    assert blocked(c, 1, via=0)
    assert c.counters(0)[1] > tx0 and c.counters(1)[0] == rx1  # sent by 0, never reached 1
    c.heal(0, 1)
    assert c.cuts == []
    assert ok(c, 1, via=0) and ok(c, 0, via=1)


def test_isolate_rejoin_partition_and_heal_all(cluster):
    c = cluster(3)
    c.isolate(2)
    assert c.cuts == [(0, 2), (1, 2)]
    assert blocked(c, 0, via=2) and blocked(c, 2, via=1)
    assert ok(c, 1, via=0) and ok(c, 2)
    c.rejoin(2)
    assert c.cuts == [] and ok(c, 0, via=2) and ok(c, 2, via=1)
    c.partition([[0], [1, 2]])
    assert c.cuts == [(0, 1), (0, 2)]
    assert blocked(c, 2, via=0) and ok(c, 2, via=1)
    c.partition([[0, 1]])  # node 2, unnamed, is alone
    assert c.cuts == [(0, 2), (1, 2)]
    c.heal_all()
    assert c.cuts == [] and ok(c, 2, via=0) and ok(c, 1, via=0)
    with pytest.raises(ValueError):
        c.cut(1, 1)


def test_kill9_and_restart_keep_origin_and_log_size(cluster):
    c = cluster(3)
    env = TestAgent().envelope()
    status, headers, body = c.request(1, "POST", "/v1/events", env, {"Content-Type": "application/cbor"})
    assert status == 201, body
    event_id = json.loads(body)["id"]
    origin = c.nodes[1].origin
    assert c.kill(1) == -9
    with pytest.raises(Unreachable, match="Refused"):
        c.request(1, "GET", "/healthz", timeout=FAIL_S)
    assert ok(c, 0) and ok(c, 2)
    c.start(1)
    assert (c.nodes[1].origin, c.nodes[1].size) == (origin, 1)
    status, _, body = c.request(1, "GET", f"/v1/events/{event_id}")
    assert status == 200 and json.loads(body)["receipt"]["origin"] == origin
    c.restart(1)
    assert (c.nodes[1].origin, c.nodes[1].size) == (origin, 1)
    assert json.loads(c.request(1, "GET", "/healthz")[2])["size"] == 1
    assert ok(c, 1, via=0)


def test_teardown_leaves_the_host_as_it_was(tmp_path):
    require_netns()
    before = host_state()
    with Cluster(2, base_dir=str(tmp_path / "a")) as c:
        assert set(host_state()[0]) == set(before[0]) | {c.hub, c.nodes[0].ns, c.nodes[1].ns}
        c.cut(0, 1)
        c.kill(0)
    assert host_state() == before
    with pytest.raises(RuntimeError, match="boom"):  # an exception inside the block
        with Cluster(2, base_dir=str(tmp_path / "b")):
            raise RuntimeError("boom")
    assert host_state() == before
    bad = Cluster(2, base_dir=str(tmp_path / "c"), node_env={1: {"ATS_SKEW_MS": "not-a-number"}})
    with pytest.raises(ClusterError, match="node1 exited"):  # a node that cannot start
        bad.up()
    assert host_state() == before
