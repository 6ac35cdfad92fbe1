"""The pure replication simulation (tests/sim/pure/sim.py): a sweep of seeds, replay, named
scenarios, a checker that is not vacuous, and the rule that it imports only ledger and consensus.

`ATS_SIM_SEED=<n>` replays one seed; `ATS_PURE_SIM_SEEDS=<count>` sweeps more in the default run;
scripts/sim_sweep.py --seeds 100000 is the long sweep.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.sim.pure import sim as pure_sim
from tests.sim.pure.sim import InvariantFailed, Scenario, Simulation, run

ROOT = Path(__file__).resolve().parents[3]
SWEEP_SEEDS = int(os.environ.get("ATS_PURE_SIM_SEEDS", "1000"))
SWEEP_S_MAX = 60.0


def test_a_sweep_of_seeds_keeps_every_invariant_and_converges():
    """1,000 seeds of 5 nodes (drops, delays, duplicates, partitions, crashes) in under a minute."""
    started = time.monotonic()
    steps = 0
    for seed in range(SWEEP_SEEDS):
        digest, sim = run(seed)  # raises InvariantFailed naming the seed and the replay command
        assert len(digest) == 64
        steps += sim.steps
    elapsed = time.monotonic() - started
    print(f"pure sim: {SWEEP_SEEDS} seeds x 5 nodes, {steps} steps, {elapsed:.1f} s")
    assert elapsed < SWEEP_S_MAX, f"the sweep took {elapsed:.1f} s"


def test_replays_one_seed():
    """ATS_SIM_SEED=<n>: the seed a failure printed, played alone (the replay command it names)."""
    seed = int(os.environ.get("ATS_SIM_SEED", "7"))
    first, sim = run(seed)
    second, again = run(seed)
    assert first == second and sim.steps == again.steps and sim.net.delivered == again.net.delivered


def test_a_seed_replays_in_another_process_with_another_hash_seed():
    code = "from tests.sim.pure.sim import run; d, s = run(11); print(d, s.steps)"
    outs = set()
    for hash_seed in ("1", "2"):
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                             env={**os.environ, "PYTHONHASHSEED": hash_seed})
        assert out.returncode == 0, out.stderr[-2000:]
        outs.add(out.stdout.strip())
    assert len(outs) == 1


def test_partition_2_3_then_heal_converges_with_the_events_of_both_sides():
    sim = _scripted(5, loss=0.0, batches=True, partition=[[0, 1], [2, 3, 4]])
    sim.net.inject(sim.net.now_ms + 10, "msg", 0, 0, ("submit", [1, 2]))
    sim.net.inject(sim.net.now_ms + 10, "msg", 3, 3, ("submit", [3, 4, 5]))
    _play(sim, 1_500)
    assert sim.nodes[1].store.held_ids >= {sim.pool[i].event.id for i in (1, 2)}
    assert not sim.nodes[1].store.held_ids & {sim.pool[i].event.id for i in (3, 4, 5)}, "the partition held"
    sim.converge()
    assert all(len(n.store.counted) == 5 for n in sim.nodes)


def test_witnesses_cosign_and_each_node_anchors_its_own_checkpoints():
    sim = _scripted(4)
    for host in range(sim.sc.nodes):
        sim.net.inject(sim.net.now_ms + 1 + host, "msg", host, host, ("submit", [50 + host]))
    _play(sim, 5)
    sim.converge()
    _play(sim, 3_000)  # cosignatures travel after the fetch that witnessed the growth
    assert all(n.anchored and n.anchored[-1][0] == 1 for n in sim.nodes)


def test_an_event_retried_at_two_nodes_is_counted_once_everywhere():
    sim = _scripted(3)
    sim.net.inject(sim.net.now_ms + 1, "msg", 0, 0, ("submit", [10, 11]))
    sim.net.inject(sim.net.now_ms + 1, "msg", 4, 4, ("submit", [10, 11]))
    _play(sim, 5)
    sim.converge()
    for node in sim.nodes:
        assert len(node.store.logs) == 2, "two origins carry the events"
        assert node.store.cost_total == sim.costs[sim.pool[10].event.id] + sim.costs[sim.pool[11].event.id]


def test_unknown_kinds_are_stored_relayed_and_counted_nowhere():
    unknown = [i for i, e in enumerate(pure_sim.event_pool()) if e.event.kind == "x.future"][:2]
    sim = _scripted(9)
    sim.net.inject(sim.net.now_ms + 1, "msg", 2, 2, ("submit", unknown + [0]))
    _play(sim, 5)
    sim.converge()
    for node in sim.nodes:
        assert node.store.unknown == {sim.pool[i].event.id for i in unknown}
        assert set(node.store.counted) == {sim.pool[0].event.id}
        assert node.penalised_by_honest == 0


def test_an_origin_restored_from_an_old_backup_is_flagged_forked_by_every_node():
    """The origin signs two histories (its log cut back to 2 entries, then grown differently): every
    node, the origin included (its key is burnt), records checkable fork evidence; nobody else is
    flagged, and the forked origin's new entries are never merged."""
    from consensus.verify import check_fork_evidence
    from tests.sim.pure.store import MemLog

    sim = _scripted(21, loss=0.0)
    sim.net.inject(sim.net.now_ms + 1, "msg", 0, 0, ("submit", [30, 31, 32, 33]))
    _play(sim, 5)
    sim.converge()
    bad = sim.nodes[0]
    sim.honest.discard(bad.key)
    sim.penalties_expected = True
    sim.net.crash(0)
    old = bad.store.logs[bad.key]
    restored = MemLog()
    restored.append(old.entries[:2], old.ids[:2], restored.frontier.copy())
    restored.note, restored.note_size = bad.signer.sign(2, restored.frontier.root()), 2
    bad.store.logs[bad.key] = restored
    bad.store.held_ids = set(restored.ids)  # the backup's counters: the events it holds
    bad.store.counted = {e: sim.costs[e] for e in restored.ids}
    bad.store.cost_total = sum(bad.store.counted.values())
    bad.acked = bad.acked[:2]
    bad.notes = {size: note for size, note in bad.notes.items() if size <= 2}
    bad.anchored = [(size, root) for size, root in bad.anchored if size <= 2]
    bad.cosigned = {size: w for size, w in bad.cosigned.items() if size <= 2}
    bad.store.changed()
    sim.net.restart(0)
    bad.boot()
    sim.wake(bad, 0)
    sim.net.inject(sim.net.now_ms + 1, "msg", 0, 0, ("submit", [40, 41, 42, 43]))
    for _ in range(200):
        _play(sim, 100)
        if all(bad.key in n.store.forks for n in sim.nodes):
            break
    for node in sim.nodes:
        assert set(node.store.forks) == {bad.key}
        assert check_fork_evidence(node.store.forks[bad.key])[0] == bad.key
        if node is not bad:
            held = node.store.logs[bad.key].ids
            assert held == old.ids[:len(held)], "the second history is never merged"


def test_the_checker_catches_a_node_that_counts_an_event_twice(monkeypatch):
    """The invariants are not vacuous: break the merge (nothing is ever held) and a seed fails."""
    import tests.sim.pure.store as store

    real = store.merge
    monkeypatch.setattr(store, "merge", lambda envelopes, held_ids: real(envelopes, set()))
    with pytest.raises(InvariantFailed, match="counts events other than each event it holds once"):
        for seed in range(50):
            run(seed)


def test_the_checker_catches_pages_served_out_of_order(monkeypatch):
    """A server that reorders a page is caught by verify_range, and the checker flags the penalty."""
    import tests.sim.pure.simnode as simnode

    real = simnode.SimNode.serve

    def reversed_pages(self, request, rng):
        body = real(self, request, rng)
        if request[0] == "entries":
            from consensus.peermsg import entries
            raws = entries.decode(body, 1 << 20)
            return entries.encode(raws[::-1]) if len(raws) > 1 else body
        return body

    monkeypatch.setattr(simnode.SimNode, "serve", reversed_pages)
    with pytest.raises(InvariantFailed, match="penalised an honest peer"):
        for seed in range(50):
            run(seed)


def _scripted(seed: int, *, loss: float | None = None, batches: bool = False,
              partition: list[list[int]] | None = None) -> Simulation:
    """The seed's simulation with no random crashes or partitions (nor random batches, unless
    `batches`), `partition` cut, every node started: the test injects its own events."""
    sc = Scenario.from_seed(seed)
    sc.crashes = sc.partitions = 0
    if not batches:
        sc.batches = 0
    if loss is not None:
        sc.options.loss = loss
    sim = Simulation(sc)
    if partition:
        sim.net.partition(partition)
    sim.net_start = sim.net.now_ms
    for node in sim.nodes:
        sim.wake(node, 0)
    return sim


def _play(sim: Simulation, ms: int) -> None:
    """Run the network for ms of virtual time, checking the invariants after every step."""
    until = sim.net.now_ms + ms
    while sim.net.now_ms < until:
        ev = sim.net.pop()
        sim.steps += 1
        sim.deliver(ev)
        sim.check(sim.nodes[ev.dst])


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out |= {a.name for a in n.names}
        elif isinstance(n, ast.ImportFrom) and n.module:
            out.add(n.module)
    return out


def test_the_pure_simulation_imports_only_ledger_consensus_and_the_standard_library():
    allowed_std = set(sys.stdlib_module_names)
    bad = []
    for path in sorted((ROOT / "tests/sim/pure").glob("*.py")):
        if path.name.startswith("test_"):
            continue
        for name in _imports(path):
            top = name.split(".")[0]
            if top in ("ledger", "consensus", "__future__") or name.startswith("tests.sim.pure"):
                continue
            if top in allowed_std and top not in ("asyncio", "socket", "sqlite3", "threading", "time", "os"):
                continue
            bad.append(f"{path.name} imports {name}")
    assert bad == []
