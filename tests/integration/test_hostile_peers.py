"""A hostile peer (a real HTTP server in the test) against a real node: forged entries, a forked
log, oversized frames, and a flood. Each is detected, penalised, and leaves nothing stored."""

import asyncio
import json
import os
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import cbor2
import pytest
from aiohttp import web

from consensus.verify import check_fork_evidence
from ledger.checkpoint import Checkpoint, origin_line, sign_checkpoint
from ledger.merkle import Frontier, leaf_hash
from ledger.signing import public_key_from_seed
from tests.agentkit import TestAgent
from tests.integration.http import get, request
from tests.integration.nodeproc import NodeProcess
from tests.integration.waiting import wait_until

WAIT_S = 20


class FakeOrigin:
    """An origin log the test controls: it can sign any history it likes."""

    def __init__(self):
        self.seed = os.urandom(32)
        self.key = public_key_from_seed(self.seed)
        self.entries: list[bytes] = []

    def note(self, entries=None):
        entries = self.entries if entries is None else entries
        frontier = Frontier()
        for e in entries:
            frontier.append(leaf_hash(e))
        return sign_checkpoint(Checkpoint(origin_line(self.key), len(entries), frontier.root()), self.seed)


class HostilePeer:
    """An aiohttp server on 127.0.0.5 whose answers each test scripts."""

    def __init__(self):
        self.node = os.urandom(32)
        self.frontier_body = json.dumps({"node": self.node.hex(), "origins": [], "peers": []}).encode()
        self.entries: dict[str, list[bytes]] = {}
        self.requests = 0
        self.captured: tuple[str, dict[str, str]] | None = None  # the last signed frontier request received
        self.callers: set[str] = set()  # X-ATS-Node of every node that called this peer
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _serve(self):
        self.loop = asyncio.new_event_loop()
        app = web.Application()
        app.router.add_get("/v1/peer/frontier", self._frontier)
        app.router.add_get("/v1/log/entries", self._entries)
        app.router.add_get("/v1/log/proof/consistency", self._consistency)
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.5", 0)
        self.loop.run_until_complete(site.start())
        self.url = f"http://127.0.0.5:{self.runner.addresses[0][1]}"
        self._ready.set()
        self.loop.run_forever()
        self.loop.run_until_complete(self.runner.cleanup())
        self.loop.close()

    def serve(self, origin: FakeOrigin, entries: list[bytes], note: str | None = None):
        note = note or origin.note(entries)
        size = int(note.split("\n")[1])
        self.entries[origin.key.hex()] = entries
        self.frontier_body = json.dumps({"node": self.node.hex(), "peers": [], "origins": [
            {"origin": origin.key.hex(), "size": size, "checkpoint": note}]}).encode()

    async def _frontier(self, request):
        self.requests += 1
        self.captured = (request.path_qs, {k: v for k, v in request.headers.items() if k.startswith("X-ATS-")})
        self.callers.add(request.headers.get("X-ATS-Node", ""))
        return web.Response(body=self.frontier_body, content_type="application/json")

    async def _entries(self, request):
        start, end = int(request.query["start"]), int(request.query["end"])
        entries = self.entries.get(request.query["origin"], [])[start:end]
        assert "application/cbor" in request.headers.get("Accept", "")
        return web.Response(body=cbor2.dumps({"origin": request.query["origin"], "start": start, "entries": entries}),
                            content_type="application/cbor")

    async def _consistency(self, request):
        return web.json_response({"proof": []})

    def close(self):
        if self._thread.is_alive():
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)


@pytest.fixture
def hostile():
    peer = HostilePeer()
    yield peer
    peer.close()


@pytest.fixture
def victim(tmp_path, hostile):
    env = {"ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "100", "ATS_PEERS": hostile.url}
    node = NodeProcess(str(tmp_path / "victim"), host="127.0.0.6", env=env).start()
    yield node
    node.kill()


def peer_view(node, url):
    return next(p for p in get(node.url, "/v1/peers").json()["peers"] if p["url"] == url)


def wait_for(fn, what):
    return wait_until(what, fn, WAIT_S, interval_s=0.1)


def held_sizes(node):
    conn = sqlite3.connect(os.path.join(node.data_dir, "ledger.sqlite"))
    try:
        return {bytes(k).hex(): n for k, n in conn.execute("SELECT public_key, count(e.idx) FROM origins o "
                                                            "LEFT JOIN entries e ON e.origin = o.id GROUP BY o.id")}
    finally:
        conn.close()


def test_forged_entries_are_refused_and_the_peer_penalised(hostile, victim):
    origin = FakeOrigin()
    agent = TestAgent()
    origin.entries = [agent.envelope() for _ in range(3)]
    forged = list(origin.entries)
    forged[1] = forged[1][:-1] + bytes([forged[1][-1] ^ 1])  # one agent signature flipped
    hostile.serve(origin, forged, note=origin.note())  # the honest root, forged entries
    view = wait_for(lambda: (v := peer_view(victim, hostile.url))["penalties"] and v, "a penalty")
    assert view["state"] == "penalised" and view["last_error"].startswith("bad_signature")
    assert held_sizes(victim).get(origin.key.hex(), 0) == 0


def test_validly_signed_entries_that_are_not_the_signed_log_are_refused(hostile, victim):
    origin = FakeOrigin()
    agent = TestAgent()
    origin.entries = [agent.envelope() for _ in range(3)]
    impostors = [agent.envelope() for _ in range(3)]  # each one verifies; together not the signed root
    hostile.serve(origin, impostors, note=origin.note())
    view = wait_for(lambda: (v := peer_view(victim, hostile.url))["penalties"] and v, "a penalty")
    assert view["last_error"].startswith("bad_root")
    assert held_sizes(victim).get(origin.key.hex(), 0) == 0


def test_a_forked_origin_is_recorded_with_evidence_and_no_longer_merged(hostile, victim, tmp_path):
    origin = FakeOrigin()
    agent = TestAgent()
    origin.entries = [agent.envelope() for _ in range(2)]
    hostile.serve(origin, origin.entries)
    wait_for(lambda: held_sizes(victim).get(origin.key.hex()) == 2, "the honest history")
    # the origin now signs a different history of the same size
    other = [agent.envelope() for _ in range(2)]
    hostile.serve(origin, other)
    forks = wait_for(lambda: get(victim.url, "/v1/forks").json()["forks"], "fork evidence")
    assert forks[0]["origin"] == origin.key.hex()
    evidence = forks[0]["evidence"]
    assert evidence["a"] != evidence["b"]
    assert check_fork_evidence(evidence)[0] == origin.key  # anyone can check it
    assert peer_view(victim, hostile.url)["last_error"].startswith("fork")
    # later, longer histories of the forked origin are not merged
    hostile.serve(origin, other + [agent.envelope()])
    time.sleep(1.0)
    assert held_sizes(victim)[origin.key.hex()] == 2
    # a node that can only learn of it from the victim (the hostile peer is gone) learns the
    # fork by gossip, checks the evidence itself, and never merges the origin
    hostile.close()
    bystander = NodeProcess(str(tmp_path / "bystander"), host="127.0.0.7", env={
        "ATS_OPEN_MEMBERSHIP": "true", "ATS_REPLICATION_INTERVAL_MS": "100", "ATS_PEERS": victim.url}).start()
    try:
        relayed = wait_for(lambda: get(bystander.url, "/v1/forks").json()["forks"], "the fork at the bystander")
        assert relayed[0]["origin"] == origin.key.hex() and relayed[0]["reported_by"].endswith("(relayed)")
        assert check_fork_evidence(relayed[0]["evidence"])[0] == origin.key
        time.sleep(1.0)  # ten replication rounds with the victim, which serves the origin's entries
        assert held_sizes(bystander).get(origin.key.hex(), 0) == 0  # learned as forked: never merged
    finally:
        bystander.kill()


def test_fork_evidence_that_proves_nothing_penalises_the_peer_that_relayed_it(hostile, victim):
    origin = FakeOrigin()
    agent = TestAgent()
    entries = [agent.envelope() for _ in range(2)]
    note = origin.note(entries)
    lie = {"origin": origin.key.hex(), "a": note, "b": note}  # one checkpoint twice is no fork
    hostile.frontier_body = json.dumps({"node": hostile.node.hex(), "peers": [], "origins": [],
                                        "forks": [lie]}).encode()
    view = wait_for(lambda: (v := peer_view(victim, hostile.url))["penalties"] and v, "a penalty")
    assert view["last_error"].startswith("bad_evidence")
    assert get(victim.url, "/v1/forks").json()["forks"] == []


def test_oversized_and_malformed_frontiers_are_refused(hostile, victim):
    hostile.frontier_body = b'{"node": "' + b"ab" * 32 + b'", "origins": [], "pad": "' + b"x" * (9 * 1024 * 1024) + b'"}'
    view = wait_for(lambda: (v := peer_view(victim, hostile.url))["penalties"] and v, "a penalty")
    assert view["last_error"].startswith("oversized")
    assert get(victim.url, "/healthz").status == 200


def test_a_flood_of_unsigned_peer_requests_is_refused_and_the_node_keeps_serving(victim):
    def hit(_):
        return request(victim.url, "GET", "/v1/peer/frontier").status

    started = time.monotonic()
    with ThreadPoolExecutor(32) as pool:
        statuses = list(pool.map(hit, range(600)))
    assert set(statuses) == {401}
    agent = TestAgent()
    from tests.integration.http import post_cbor

    assert post_cbor(victim.url, "/v1/events", agent.envelope()).status == 201
    assert time.monotonic() - started < 60


def test_a_bad_consistency_proof_penalises_the_peer_but_never_forks_the_origin(hostile, victim):
    origin = FakeOrigin()
    agent = TestAgent()
    origin.entries = [agent.envelope() for _ in range(2)]
    hostile.serve(origin, origin.entries)
    wait_for(lambda: held_sizes(victim).get(origin.key.hex()) == 2, "the first two entries")
    origin.entries += [agent.envelope() for _ in range(2)]
    hostile.serve(origin, origin.entries)  # honest growth, but this peer answers every proof with []
    view = wait_for(lambda: (v := peer_view(victim, hostile.url))["penalties"] and v, "a penalty")
    assert view["last_error"].startswith("bad_proof")
    assert get(victim.url, "/v1/forks").json()["forks"] == []
    assert held_sizes(victim)[origin.key.hex()] == 2


def test_a_captured_peer_request_with_a_forged_advertise_is_refused_and_replays_count_once(hostile, victim, make_node):
    """Issue 10 class 5: a peer (here `hostile`) captures the victim's signed frontier request and
    presents it to another node, with its own URL in X-ATS-Advertise, then again as it was."""
    other = make_node("other", host="127.0.0.7", env={"ATS_OPEN_MEMBERSHIP": "true"}).start()
    hostile.captured = None  # one signed after `other` started: it refuses requests signed before
    path_qs, headers = wait_for(lambda: hostile.captured, "a signed frontier request from the victim")
    assert headers["X-ATS-Advertise"] == victim.url and len(headers["X-ATS-Nonce"]) == 32
    forged = request(other.url, "GET", path_qs, headers={**headers, "X-ATS-Advertise": hostile.url})
    assert (forged.status, forged.code) == (401, "bad_signature")
    first = request(other.url, "GET", path_qs, headers=headers)
    assert first.status in (200, 204)  # the signer's own request, unchanged: it asked for a frontier
    again = request(other.url, "GET", path_qs, headers=headers)
    assert (again.status, again.code) == (409, "peer_request_replayed")
    time.sleep(1.5)  # a peer added to the table would be called within a round
    urls = {p["url"] for p in get(other.url, "/v1/peers").json()["peers"]}
    assert hostile.url not in urls and other.origin not in hostile.callers
