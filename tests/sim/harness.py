"""Deterministic simulation of the gossip core: the node's own replication code on a seeded network.

Each simulated node is the real thing minus its sockets and threads: its own
SQLite file (`InlineDatabase`), `OwnLog`, `Committer`, `BudgetBook`,
`Queries` and `Replicator`, with peer requests carried by `SimNet`
(tests/sim/simnet.py) and time by `SimLoop` (tests/sim/simloop.py). A seed
fixes everything: the topology, the network's delays, losses, duplicates and
partitions, the agents' events and which nodes they reach, crashes and
restarts. `run(seed)` plays one schedule and checks the invariants after every
step; a failure names its seed, and `ATS_SIM_SEED=<seed>` replays it exactly.

Invariants, after every step:

- **prefix**: every origin log a node holds is a prefix of that origin's own log,
  under a checkpoint the origin signed (nobody stores what it did not verify);
- **durable**: every event a node acknowledged is in its log at the index its
  receipt named, across crashes;
- **monotone**: no node's copy of any log ever shrinks;
- **counted once**: a node's usage counters equal the sum over the distinct
  events it holds, whichever origins carry them (an agent that retried at two
  nodes is charged once);
- **no false forks**: honest origins are never flagged.

At the end, with every link healed and every node restarted: **convergence** —
within a bounded time all cluster digests are equal, every acknowledged event is
held by every node, and every node's counters are the same.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import random
import sqlite3
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, TypeVar

from ledger.checkpoint import open_checkpoint, verify_cosignature, origin_line, NoteSignature
from ledger.events import make_envelope_bytes, make_event_bytes, parse_envelope
from ledger.signing import public_key_from_seed, sign
from ledger.windows import window_bounds
from node.budgets import BudgetBook
from node.config import Config
from node.ingest import Committer, OwnLog
from node.metrics import NodeMetrics
from node.queries import Queries
from node.replication import Replicator, cluster_digest, digest_state
from node.store import merkle as merkle_store
from node.store import peers as peer_store
from node.store.sqlite import InlineDatabase
from tests.sim.simloop import EPOCH_MS, SimClock, SimLoop
from tests.sim.simnet import NetParams, SimNet, SimServer, SimTransport

T = TypeVar("T")
CONVERGE_S_MAX = 600.0  # virtual seconds allowed for convergence after the last heal (lossy links: slow, not stuck)


class InvariantFailed(AssertionError):
    pass


@dataclass
class Scenario:
    """What one seed decides before the run starts."""

    seed: int
    nodes: int
    agents: int
    duration_s: float
    net: NetParams
    ring: bool  # each node knows one static peer (learns the rest by peer exchange) instead of all
    interval_ms: int
    entries_max: int

    @classmethod
    def from_seed(cls, seed: int, nodes: int | None = None) -> "Scenario":
        rng = random.Random(f"scenario/{seed}")
        return cls(
            seed=seed,
            nodes=nodes or rng.choice([3, 4, 5]),
            agents=rng.choice([2, 3, 5]),
            duration_s=rng.uniform(8.0, 25.0),
            net=NetParams.random(rng),
            ring=rng.random() < 0.5,
            interval_ms=rng.choice([200, 500, 1000]),
            entries_max=rng.choice([3, 8, 64]),
        )


@dataclass
class Accepted:
    origin: int  # node index
    index: int
    cost: int
    agent: bytes


@dataclass
class SimNode:
    index: int
    seed: bytes
    path: str
    host: str
    static_peers: tuple[str, ...]
    up: bool = False
    db: Any = None
    own: Any = None
    book: Any = None
    committer: Any = None
    replicator: Any = None
    queries: Any = None
    tasks: set = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://{self.host}:8470"

    @property
    def key(self) -> bytes:
        return public_key_from_seed(self.seed)


class Simulation:
    def __init__(self, scenario: Scenario, base_dir: str, *, check_every_step: bool = True):
        self.sc = scenario
        self.rng = random.Random(f"run/{scenario.seed}")
        self.loop = SimLoop()
        self.clock = SimClock(self.loop)
        self.net = SimNet(random.Random(f"net/{scenario.seed}"), scenario.net)
        self.config = Config()
        self.check_every_step = check_every_step
        hosts = [f"n{i}.sim" for i in range(scenario.nodes)]
        self.nodes: list[SimNode] = []
        for i, host in enumerate(hosts):
            if scenario.ring:
                static = (f"http://{hosts[(i + 1) % len(hosts)]}:8470",)
            else:
                static = tuple(f"http://{h}:8470" for h in hosts if h != host)
            self.nodes.append(SimNode(i, self.rng.randbytes(32), os.path.join(base_dir, f"{host}.db"), host, static))
        self.agents = [self.rng.randbytes(32) for _ in range(scenario.agents)]
        self.accepted: dict[bytes, Accepted] = {}
        self.costs: dict[bytes, tuple[bytes, int]] = {}  # event id -> (agent, cost), every event made
        self.trace: list[str] = []
        self.max_sizes: dict[tuple[int, bytes], int] = {}
        self._readers: dict[int, sqlite3.Connection] = {}
        self.steps = 0
        self.end_s = 0.0
        self.forked: set[bytes] = set()  # keys a script made fork on purpose: flags expected, prefixes not

    # -- node lifecycle -------------------------------------------------------------------------

    async def start(self, node: SimNode) -> None:
        db = InlineDatabase(node.path)
        await db.open()
        own = OwnLog(node.seed)
        now = self.clock.now_ms()
        await db.write(own.open, now)
        book = BudgetBook.from_config(self.config, own.public_key)
        await db.write(book.load, now)
        replicator = Replicator(
            db, own, book, self.clock, static_peers=node.static_peers, open_membership=True,
            interval_ms=self.sc.interval_ms, entries_max=self.sc.entries_max, peer_count_max=64, witness_quorum=1,
            anchor_sink="", transport=SimTransport(self.net, node.host),
            rng=random.Random(f"replicator/{self.sc.seed}/{node.index}/{self.loop.time()}"),
            nonce=random.Random(f"peer-nonce/{self.sc.seed}/{node.index}/{self.loop.time()}").randbytes,
        )
        replicator.own_url = node.url
        nonces = random.Random(f"nonce/{self.sc.seed}/{node.index}/{self.loop.time()}")
        committer = Committer(
            db, own, self.clock, NodeMetrics(lambda: own.size, lambda: own.checkpoint_size),
            events_max=8, linger_ms=5, skew_ms=self.config.skew_ms, book=book, on_commit=replicator.poke,
            nonce=nonces.randbytes,
        )
        queries = Queries(db, own, book, self.clock, entries_page_max=self.config.entries_page_max,
                          usage_events_max=self.config.usage_events_max)
        committer.start()
        replicator.start()
        node.db, node.own, node.book, node.committer, node.replicator, node.queries = db, own, book, committer, replicator, queries
        self.net.servers[node.host] = SimServer(replicator, queries, self.clock, self.config.skew_ms)
        node.up = True

    async def crash(self, node: SimNode) -> None:
        """What SIGKILL leaves: committed transactions; nothing in memory, nothing in flight."""
        self.net.servers.pop(node.host, None)
        node.up = False
        for t in list(node.tasks):
            t.cancel()
        await node.replicator.stop()
        await node.committer.stop()
        await node.db.close()

    # -- agents -----------------------------------------------------------------------------------

    def _event(self) -> tuple[bytes, bytes, int]:
        seed = self.rng.choice(self.agents)
        agent = public_key_from_seed(seed)
        cost = self.rng.randint(1, 20)
        raw = make_event_bytes("act", agent, self.clock.now_ms(), self.rng.randbytes(16),
                               {"op": "sim.step", "cost": cost, "units": 1})
        env = make_envelope_bytes(raw, sign(raw, seed))
        parsed = parse_envelope(env)
        self.costs[parsed.event.id] = (agent, cost)
        return env, parsed.event.id, cost

    async def lose_disk(self, node: SimNode) -> None:
        """Crash the node and delete its database: it restarts with its key and an empty log."""
        await self.crash(node)
        self.forked.add(node.key)
        reader = self._readers.pop(node.index, None)
        if reader is not None:
            reader.close()
        for suffix in ("", "-wal", "-shm"):
            if os.path.exists(node.path + suffix):
                os.remove(node.path + suffix)
        self.accepted = {k: v for k, v in self.accepted.items() if v.origin != node.index}
        self.max_sizes = {k: v for k, v in self.max_sizes.items() if k[0] != node.index}
        await self.start(node)

    def forks_at(self, node: SimNode) -> set[bytes]:
        return set(peer_store.forked_origins(self._reader(node)))

    def held_size(self, node: SimNode, origin: bytes) -> int:
        return next((s for o, s, _ in digest_state(self._reader(node))[0] if o == origin), 0)

    def submit(self, node: SimNode, env: bytes) -> None:
        if not node.up:
            return  # connection refused: the agent tries elsewhere or later
        task = self.loop.create_task(self._submit(node, env))
        node.tasks.add(task)
        task.add_done_callback(node.tasks.discard)

    async def _submit(self, node: SimNode, env: bytes) -> None:
        parsed = parse_envelope(env)
        try:
            [outcome] = await node.committer.submit([parsed])
        except Exception:  # noqa: BLE001 - not acknowledged (shutting down): nothing promised
            return
        if outcome.receipt is not None and outcome.receipt["status"] == "accepted":
            agent, cost = self.costs[parsed.event.id]
            first = self.accepted.setdefault(parsed.event.id, Accepted(node.index, outcome.receipt["index"], cost, agent))
            if first.origin != node.index:  # the same event at a second node: also acknowledged there
                self.accepted[parsed.event.id + bytes([node.index])] = Accepted(
                    node.index, outcome.receipt["index"], cost, agent)

    # -- the schedule -----------------------------------------------------------------------------

    def run(self) -> str:
        return self.play(self._main)

    def play(self, script: Callable[[], Awaitable[T]]) -> T:
        """Run script() on this simulation's loop; on failure describe the cluster; always clean up."""
        try:
            return self.loop.run_until_complete(script())
        except InvariantFailed as e:
            raise InvariantFailed(f"{e}\n{self.describe()}\nreplay: ATS_SIM_SEED={self.sc.seed}") from None
        finally:
            self.loop.run_until_complete(self._stop_all())
            for conn in self._readers.values():
                conn.close()
            self.loop.close()

    async def _stop_all(self) -> None:
        for node in self.nodes:
            if node.up:
                await self.crash(node)
        me = asyncio.current_task()
        others = [t for t in asyncio.all_tasks(self.loop) if t is not me]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    def describe(self) -> str:
        """Each node's held logs and peer table, and the last steps: what a failing seed looked like."""
        now = self.clock.now_ms()
        lines = [f"scenario {self.sc}"]
        for n in self.nodes:
            held = [f"n{self._owner(o)}:{s}" for o, s, _ in digest_state(self._reader(n))[0]]
            lines.append(f"  n{n.index} {'up' if n.up else 'down'} holds {' '.join(held)}")
            for p in (n.replicator.peers.values() if n.replicator else ()):
                wait = max(0, p.next_try_ms - now)
                lines.append(f"    peer {p.url} {p.source} failures={p.failures} penalties={p.penalties}"
                             f" next_try_in={wait}ms last_error={p.last_error}")
        lines.append("  last steps: " + " / ".join(self.trace[-12:]))
        return "\n".join(lines)

    def _owner(self, origin: bytes) -> str:
        return next((str(n.index) for n in self.nodes if n.key == origin), origin.hex()[:8])

    async def _main(self) -> str:
        for node in self.nodes:
            await self.start(node)
        t_end = self.sc.duration_s
        while self.loop.time() < t_end:
            await asyncio.sleep(self.rng.expovariate(1 / 0.15))
            await self._act()
            self.steps += 1
            if self.check_every_step:
                self.check()
        self.net.heal()
        self.trace.append(f"{self.loop.time():.6f} heal-all")
        for node in self.nodes:
            if not node.up:
                await self.start(node)
        deadline = self.loop.time() + CONVERGE_S_MAX
        while True:
            await asyncio.sleep(1.0)
            self.check()
            if self._converged():
                break
            if self.loop.time() > deadline:
                raise InvariantFailed(f"no convergence {CONVERGE_S_MAX:.0f} s after the last heal: "
                                      f"digests {self._digests()}")
        self.check_final()
        self.end_s = self.loop.time()
        self.trace.append(f"{self.loop.time():.6f} converged {self._digests()[0]}")
        return hashlib.sha256("\n".join(self.trace).encode()).hexdigest()

    async def _act(self) -> None:
        r = self.rng.random()
        t = f"{self.loop.time():.6f}"
        up = [n for n in self.nodes if n.up]
        if r < 0.62:
            env, eid, _ = self._event()
            node = self.rng.choice(self.nodes)
            self.submit(node, env)
            self.trace.append(f"{t} submit {eid.hex()[:12]} n{node.index}")
        elif r < 0.72:  # an agent's retry reaches two nodes: one event, two origins
            env, eid, _ = self._event()
            a, b = self.rng.sample(self.nodes, 2)
            self.submit(a, env)
            self.submit(b, env)
            self.trace.append(f"{t} submit2 {eid.hex()[:12]} n{a.index} n{b.index}")
        elif r < 0.78:
            hosts = [n.host for n in self.nodes]
            self.rng.shuffle(hosts)
            cut = self.rng.randint(1, len(hosts) - 1)
            self.net.partition(hosts[:cut], hosts[cut:])
            self.trace.append(f"{t} partition {sorted(hosts[:cut])}|{sorted(hosts[cut:])}")
        elif r < 0.84:
            self.net.heal()
            self.trace.append(f"{t} heal")
        elif r < 0.90:
            a, b = self.rng.sample(self.nodes, 2)
            self.net.partition([a.host], [b.host])
            self.trace.append(f"{t} cut n{a.index} n{b.index}")
        elif r < 0.95:
            if len(up) > 1:
                node = self.rng.choice(up)
                self.trace.append(f"{t} crash n{node.index}")
                await self.crash(node)
        else:
            down = [n for n in self.nodes if not n.up]
            if down:
                node = self.rng.choice(down)
                self.trace.append(f"{t} restart n{node.index}")
                await self.start(node)

    # -- invariants -------------------------------------------------------------------------------

    def _reader(self, node: SimNode) -> sqlite3.Connection:
        conn = self._readers.get(node.index)
        if conn is None:
            conn = self._readers[node.index] = sqlite3.connect(f"file:{node.path}?mode=ro", uri=True,
                                                               isolation_level=None)
        return conn

    def _fail(self, message: str) -> None:
        raise InvariantFailed(f"seed {self.sc.seed} at t={self.loop.time():.3f} s (step {self.steps}): {message}")

    def check(self) -> None:
        by_key = {n.key: n for n in self.nodes}
        for node in self.nodes:
            conn = self._reader(node)
            origins, forked = digest_state(conn)
            if set(forked) - self.forked:
                self._fail(f"n{node.index} flagged honest origins as forked: {[o.hex()[:12] for o in forked]}")
            for origin, size, note in origins:
                if origin in self.forked:
                    continue
                owner = by_key.get(origin)
                if owner is None:
                    self._fail(f"n{node.index} holds an origin nobody in the cluster has: {origin.hex()}")
                cp, _ = open_checkpoint(note, origin)  # signed by the origin itself
                truth = self._reader(owner)
                oid = truth.execute("SELECT id FROM origins WHERE public_key = ?", (origin,)).fetchone()[0]
                if cp.size != size or merkle_store.tree_hash_at(truth, oid, size) != cp.root:
                    self._fail(f"n{node.index}'s copy of n{owner.index}'s log at {size} is not the origin's")
                mine = conn.execute("SELECT id, size FROM origins WHERE public_key = ?", (origin,)).fetchone()
                if mine[1] < size or (mine[1] and merkle_store.tree_hash_at(conn, mine[0], size) != cp.root):
                    self._fail(f"n{node.index} stores entries of n{owner.index} that its checkpoint does not cover")
                if mine[1] > size and merkle_store.tree_hash_at(conn, mine[0], mine[1]) != merkle_store.tree_hash_at(
                        truth, oid, mine[1]):
                    self._fail(f"n{node.index} stores pages of n{owner.index}'s log that are not the origin's")
                key = (node.index, origin)
                if size < self.max_sizes.get(key, 0):
                    self._fail(f"n{node.index}'s copy of n{owner.index}'s log shrank")
                self.max_sizes[key] = size
        for eid, acc in self.accepted.items():
            if self.nodes[acc.origin].key in self.forked:
                continue
            conn = self._reader(self.nodes[acc.origin])
            row = conn.execute(
                "SELECT e.event_id FROM entries e JOIN origins o ON o.id = e.origin WHERE o.public_key = ? AND e.idx = ?",
                (self.nodes[acc.origin].key, acc.index)).fetchone()
            if row is None or bytes(row[0]) != eid[:32]:
                self._fail(f"acknowledged event {eid[:32].hex()[:12]} is not at n{acc.origin} index {acc.index}")
        for node in self.nodes:
            self._check_counted_once(node)

    def _check_counted_once(self, node: SimNode) -> None:
        conn = self._reader(node)
        expected: dict[bytes, int] = {}
        for (eid,) in conn.execute("SELECT DISTINCT event_id FROM entries WHERE kind = 'act'"):
            agent, cost = self.costs[bytes(eid)]
            expected[agent] = expected.get(agent, 0) + cost
        for agent in {a for a, _ in self.costs.values()}:
            day = window_bounds("day", EPOCH_MS)[0]
            row = conn.execute(
                "SELECT coalesce(sum(amount), 0) FROM usage_counters WHERE scope = 'agent' AND scope_id = ?"
                " AND metric = 'act.cost' AND start_ms >= ?", (agent.hex(), day)).fetchone()
            if row[0] != expected.get(agent, 0):
                self._fail(f"n{node.index} counts {row[0]} act.cost for agent {agent.hex()[:12]},"
                           f" its distinct events sum to {expected.get(agent, 0)}")

    def _digests(self) -> list[str]:
        return [cluster_digest(*digest_state(self._reader(n))) for n in self.nodes]

    def _converged(self) -> bool:
        if len(set(self._digests())) != 1:
            return False
        ids = {eid[:32] for eid in self.accepted}
        for node in self.nodes:
            held = {bytes(r[0]) for r in self._reader(node).execute("SELECT DISTINCT event_id FROM entries")}
            if not ids <= held:
                return False
        return True

    def check_final(self) -> None:
        counters = set()
        for node in self.nodes:
            conn = self._reader(node)
            counters.add(tuple(conn.execute(
                "SELECT scope, scope_id, metric, window, start_ms, amount FROM usage_counters"
                " WHERE metric = 'act.cost' ORDER BY 1, 2, 3, 4, 5").fetchall()))
            for origin_id, size, witness, line in conn.execute(
                    "SELECT origin, size, witness, line FROM cosignatures"):
                note = conn.execute("SELECT note FROM checkpoints WHERE origin = ? AND size = ?",
                                    (origin_id, size)).fetchone()[0]
                cp, _ = open_checkpoint(note, node.key)
                verify_cosignature(cp, NoteSignature.parse_line(line), origin_line(bytes(witness)), bytes(witness))
        if len(counters) != 1:
            self._fail("nodes converged on the logs but not on the usage counters")


def run(seed: int, base_dir: str, *, nodes: int | None = None) -> tuple[str, Simulation]:
    """Play one seed's schedule; returns (trace digest, the simulation). Raises InvariantFailed."""
    sim = Simulation(Scenario.from_seed(seed, nodes), base_dir)
    digest = sim.run()
    return digest, sim
