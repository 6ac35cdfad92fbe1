"""The gossip core under a seeded network: many schedules, each checked after every step.

`ATS_SIM_SEED=<n>` replays one seed (a failure prints its seed and the replay line);
`ATS_SIM_SEEDS=<count>` runs more schedules than the default (scripts/bench_sim.py runs thousands).
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys

import pytest

from consensus.verify import check_fork_evidence
from node.store import peers as peer_store
from tests.sim.harness import InvariantFailed, Scenario, Simulation, run

DEFAULT_SEEDS = 40


def _seeds() -> list[int]:
    if os.environ.get("ATS_SIM_SEED"):
        return [int(os.environ["ATS_SIM_SEED"])]
    return list(range(int(os.environ.get("ATS_SIM_SEEDS", DEFAULT_SEEDS))))


@pytest.mark.parametrize("seed", _seeds())
def test_every_schedule_keeps_the_invariants_and_converges(seed, tmp_path):
    digest, sim = run(seed, str(tmp_path))
    assert len(digest) == 64
    assert sim.steps > 10 and sim.accepted, "the schedule did something"


def test_a_seed_replays_exactly(tmp_path):
    first, sim = run(7, str(tmp_path / "a"))
    second, _ = run(7, str(tmp_path / "b"))
    assert first == second
    assert run(8, str(tmp_path / "c"))[0] != first
    assert sim.net.requests > 50


def test_a_seed_replays_exactly_in_another_process_with_another_hash_seed(tmp_path):
    """Set and dict order must not leak into a run: replay works from the seed alone."""
    code = ("import sys; from tests.sim.harness import run; "
            "print(run(11, sys.argv[1])[0])")
    digests = set()
    for hash_seed, sub in (("1", "p1"), ("2", "p2")):
        os.makedirs(tmp_path / sub)
        out = subprocess.run([sys.executable, "-c", code, str(tmp_path / sub)], capture_output=True, text=True,
                             timeout=120, env={**os.environ, "PYTHONHASHSEED": hash_seed},
                             cwd=os.path.dirname(os.path.dirname(os.path.dirname(__file__))))
        assert out.returncode == 0, out.stderr[-2000:]
        digests.add(out.stdout.strip().splitlines()[-1])
    assert len(digests) == 1


@pytest.mark.parametrize("nodes", [3, 7])
def test_lossy_network_with_duplicates_converges(nodes, tmp_path):
    sc = Scenario.from_seed(1000 + nodes, nodes)
    sc.net.loss, sc.net.duplication = 0.15, 0.15
    sim = Simulation(sc, str(tmp_path))
    sim.run()
    assert sim.net.lost > 0 and sim.net.duplicated > 0


def test_the_checker_catches_a_node_that_counts_an_event_twice(tmp_path, monkeypatch):
    """The invariants are not vacuous: break the merge (count events already held) and a seed fails."""
    import types

    from node import replstore

    forgetful = types.SimpleNamespace(**vars(replstore.log_store))
    forgetful.find_entries = lambda conn, ids: {}  # "held nowhere yet", always
    monkeypatch.setattr(replstore, "log_store", forgetful)  # where replication stores a page
    with pytest.raises(InvariantFailed, match="counts .* act.cost"):
        for seed in range(20):
            run(seed, str(tmp_path / str(seed)))


def test_a_node_restored_from_an_old_backup_is_flagged_forked_at_every_node(tmp_path):
    """Its key signs a second history: the node itself finds out from a peer's copy of its log,
    stores self-checking evidence, stops writing, and every node learns the fork and stops merging."""
    sc = Scenario.from_seed(5, 4)
    sc.net.loss = sc.net.duplication = 0.0
    sim = Simulation(sc, str(tmp_path))
    victim, others = sim.nodes[0], sim.nodes[1:]

    async def script():
        for node in sim.nodes:
            await sim.start(node)
        for _ in range(6):
            sim.submit(victim, sim._event()[0])
            await asyncio.sleep(0.3)
        await asyncio.sleep(10)
        old_size = sim.held_size(others[0], victim.key)
        assert old_size == 6 and all(sim.held_size(n, victim.key) == 6 for n in others)
        await sim.lose_disk(victim)
        for _ in range(9):  # a different history, past the size the others hold
            sim.submit(victim, sim._event()[0])
            await asyncio.sleep(0.3)
        for _ in range(120):
            if all(victim.key in sim.forks_at(n) for n in sim.nodes):
                break
            await asyncio.sleep(1)
        assert all(victim.key in sim.forks_at(n) for n in sim.nodes), "every node flags the forked key"
        assert victim.own.read_only_reason and "two different logs" in victim.own.read_only_reason
        assert all(sim.held_size(n, victim.key) == old_size for n in others), "not merged past the fork"
        for n in others:  # every node holds evidence that checks on its own
            [f] = [f for f in peer_store.forks(sim._reader(n)) if f["origin"] == victim.key.hex()]
            assert check_fork_evidence(f["evidence"])[0] == victim.key
        sim.check()  # the surviving nodes still hold only verified prefixes, counted once

    sim.play(script)


def _quiet(seed: int, nodes: int, *, ring: bool) -> Scenario:
    sc = Scenario.from_seed(seed, nodes)
    sc.net.loss = sc.net.duplication = 0.0
    sc.ring, sc.interval_ms, sc.entries_max = ring, 500, 64
    return sc


def test_a_peer_that_stays_down_is_dropped_unless_static_and_comes_back_when_it_returns(tmp_path):
    sim = Simulation(_quiet(21, 4, ring=True), str(tmp_path))  # node i's one static peer is node i+1
    gone = sim.nodes[2]

    async def script():
        for node in sim.nodes:
            await sim.start(node)
        sim.submit(sim.nodes[0], sim._event()[0])
        await asyncio.sleep(10)
        assert all(len(n.replicator.peers) == 3 for n in sim.nodes), "peer exchange filled every table"
        await sim.crash(gone)
        await asyncio.sleep(600)
        for n in sim.nodes:
            if n is gone:
                continue
            peer = n.replicator.peers.get(gone.url)
            if n is sim.nodes[1]:  # its static peer: kept, shown dead
                assert peer is not None and peer.view(sim.clock.now_ms())["state"] == "dead"
            else:
                assert peer is None, f"n{n.index} still lists the dead exchanged peer"
        await sim.start(gone)
        sim.submit(gone, sim._event()[0])
        for _ in range(30):
            await asyncio.sleep(1)
            if len(set(sim._digests())) == 1 and all(gone.url in n.replicator.peers for n in sim.nodes if n is not gone):
                break
        assert len(set(sim._digests())) == 1
        assert all(gone.url in n.replicator.peers for n in sim.nodes if n is not gone), "known again once it calls"
        sim.check()

    sim.play(script)


def test_a_restarted_peer_is_served_at_once_not_after_its_backoff(tmp_path):
    sim = Simulation(_quiet(22, 3, ring=False), str(tmp_path))
    back = sim.nodes[2]

    async def script():
        for node in sim.nodes:
            await sim.start(node)
        await sim.crash(back)
        for _ in range(5):
            sim.submit(sim.nodes[0], sim._event()[0])
            await asyncio.sleep(20)  # the others back off: their next try is 15-30 s away
        assert all(n.replicator.peers[back.url].failures >= 4 for n in sim.nodes[:2])
        await sim.start(back)
        started = sim.loop.time()
        env, eid, _ = sim._event()
        sim.submit(back, env)  # news at the restarted node: its push must be heard at once
        while sim.loop.time() - started < 60:
            await asyncio.sleep(0.05)
            if all(eid in {bytes(r[0]) for r in sim._reader(n).execute("SELECT event_id FROM entries")}
                   for n in sim.nodes):
                break
        took = sim.loop.time() - started
        assert took < 2.0, f"the restarted node's event took {took:.1f} s to reach every node"
        assert all(n.replicator.peers[back.url].failures == 0 for n in sim.nodes[:2])
        sim.check()

    sim.play(script)
