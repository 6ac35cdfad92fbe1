"""The pure replication simulation: N `ReplicationEngine`s in one thread on a seeded network.

`run(seed)` plays one schedule decided by the seed alone: topology (every node knows all its
peers, or a ring that peer exchange fills), the network's delays, losses and duplicates,
partitions and heals, crashes and restarts, and agents' batches (some retried at a second node,
some of a kind this release does not know). After every step the invariants below are checked on
the node that stepped; at the end every link is healed, every node restarted, and the cluster
must converge within CONVERGE_MS of virtual time. A failure raises `InvariantFailed` naming the
seed and the one-line command that replays it:

    ATS_SIM_SEED=<seed> python -m pytest tests/sim/pure -q -k replays_one_seed

Invariants:
- prefix: every origin log a node holds is a prefix of the origin's own log, and the note it
  holds for it is the origin's signature over the root of its entries at that size;
- durable: every event a node acknowledged is in its own log at the index it named (crashes too);
- monotone: no copy of a log ever shrinks;
- counted once: a node's counters hold each event id it holds (of a known kind) once, and
  nothing else; unknown kinds are held and counted nowhere;
- no false fork: no honest origin is ever flagged, and no honest peer is penalised;
- anchored: every checkpoint a node anchored (witness_quorum cosignatures, each verified) is a root
  of its own log, each larger than the one before;
- convergence: after the final heal all digests are equal and every node holds every acked event.

Imports: `ledger`, `consensus` and this package only (tests/sim/pure/test_pure_sim.py checks it).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass
from typing import Any

from ledger import encoding
from ledger.checkpoint import open_checkpoint
from ledger.events import make_envelope_bytes, make_event_bytes, parse_envelope
from ledger.signing import public_key_from_seed, sign
from tests.sim.pure.net import NetOptions, Network
from tests.sim.pure.simnode import REQUEST_TIMEOUT_MS, SimNode, Timeout, host_of, url_of

CONVERGE_MS = 600_000  # virtual ms after the final heal (lossy links and many pages: slow, not stuck; seed 104131 takes 207 s)
POOL_EVENTS = 600
AGENTS = 6
UNKNOWN_EVERY = 25  # one pool event in this many is of a kind this release does not know


class InvariantFailed(AssertionError):
    pass


def _seed_bytes(label: str) -> bytes:
    return hashlib.sha256(label.encode()).digest()


_POOL: list[Any] | None = None


def event_pool() -> list[Any]:
    """Signed envelopes shared by every seed (signing is the costly part; a seed picks from them)."""
    global _POOL
    if _POOL is None:
        agents = [_seed_bytes(f"pure-sim/agent/{i}") for i in range(AGENTS)]
        pool = []
        for i in range(POOL_EVENTS):
            seed = agents[i % AGENTS]
            signer = public_key_from_seed(seed)
            nonce = _seed_bytes(f"nonce/{i}")[:16]
            ts = 1_780_000_000_000 + i
            if i % UNKNOWN_EVERY == UNKNOWN_EVERY - 1:  # a newer node's kind: built by hand, not by make_event_bytes
                raw = encoding.encode({"v": 1, "kind": "x.future", "signer": signer, "ts": ts, "nonce": nonce,
                                       "body": {"what": i}})
            else:
                raw = make_event_bytes("act", signer, ts, nonce, {"op": "sim", "cost": 1 + i % 7})
            pool.append(parse_envelope(make_envelope_bytes(raw, sign(raw, seed)), unknown_kinds=True))
        _POOL = pool
    return _POOL


@dataclass
class Scenario:
    seed: int
    nodes: int
    batches: int
    ring: bool
    interval_ms: int
    entries_max: int
    options: NetOptions
    crashes: int
    partitions: int

    @classmethod
    def from_seed(cls, seed: int, nodes: int = 5, batches: int = 5) -> "Scenario":
        rng = random.Random(f"pure/{seed}")
        return cls(seed, nodes, batches, ring=rng.random() < 0.4, interval_ms=rng.choice([100, 200, 300]),
                   entries_max=rng.choice([2, 3, 8]),
                   options=NetOptions(1, rng.choice([5, 20, 60]), loss=rng.choice([0.0, 0.0, 0.05, 0.15]),
                                      duplication=rng.choice([0.0, 0.05])),
                   crashes=rng.randint(0, 2), partitions=rng.randint(0, 2))


class Simulation:
    def __init__(self, sc: Scenario):
        self.sc = sc
        self.rng = random.Random(sc.seed)
        self.net = Network(random.Random(self.rng.random()), sc.options, hosts=sc.nodes)
        keys = [_seed_bytes(f"pure-sim/node/{i}") for i in range(sc.nodes)]
        self.nodes = []
        for h in range(sc.nodes):
            static = [(h + 1) % sc.nodes] if sc.ring else [p for p in range(sc.nodes) if p != h]
            self.nodes.append(SimNode(h, keys[h], static=static, interval_ms=sc.interval_ms,
                                      entries_max=sc.entries_max, rng=random.Random(self.rng.random())))
        self.honest = {n.key for n in self.nodes}  # origins never flagged forked, whose logs are the truth
        self.penalties_expected = False  # a scenario with a forked origin: relaying peers get penalised
        self.origin_logs = {}  # filled lazily from each origin's own store (the origin is the truth)
        self.steps = 0
        self._req = 0
        self._sizes: dict[tuple[int, bytes], int] = {}
        self._notes_ok: set[tuple[bytes, str]] = set()
        self.pool = event_pool()
        self.costs = {e.event.id: getattr(e.event.body, "cost", 0) or 0 for e in self.pool}
        self._checked: dict[int, tuple[int, int]] = {}  # host -> (store version, anchors) last checked

    # -- driving ----------------------------------------------------------------------------

    def fail(self, what: str) -> None:
        raise InvariantFailed(f"seed {self.sc.seed}, step {self.steps}, t={self.net.now_ms - self.net_start} ms: "
                              f"{what}\nreplay: ATS_SIM_SEED={self.sc.seed} python -m pytest tests/sim/pure -q -k "
                              f"replays_one_seed")

    def tick(self, node: SimNode) -> None:
        """Run what the node's engine says is due, then sleep until it can say more."""
        now = self.net.now_ms
        node.engine.drop_dead()
        if node.push:
            node.push = False
            for peer in node.engine.notify_targets():
                self.net.send(node.host, host_of(peer.url), ("notify", node.store.digest(), url_of(node.host)))
        for peer in node.engine.due(now, node.running, bool(node.fetching)):
            gen = node.sync(peer, lambda: self.net.now_ms)
            self._advance(node, peer.url, gen, None, first=True)
        self.wake(node, node.engine.wait_ms(now, node.running, bool(node.fetching)))

    def wake(self, node: SimNode, delay_ms: int) -> None:
        """One pending tick per node: an earlier one replaces a later one (a node's single timer)."""
        at = self.net.now_ms + delay_ms
        if node.tick_at is not None and node.tick_at <= at and node.tick_epoch == self.net.epoch(node.host):
            return
        self.net.cancel(node.tick_timer)
        node.tick_at, node.tick_epoch = at, self.net.epoch(node.host)
        node.tick_timer = self.net.timer(node.host, delay_ms, ("tick", at))

    def _advance(self, node: SimNode, url: str, gen: Any, reply: Any, first: bool = False,
                 error: BaseException | None = None) -> None:
        try:
            request = next(gen) if first else (gen.throw(error) if error else gen.send(reply))
        except StopIteration:
            self.net.cancel(node.timeouts.pop(url, None))
            for host, payload in node.outbox:
                self.net.send(node.host, host, payload)
            node.outbox.clear()
            node.running.pop(url, None)
            self.wake(node, 0)  # a sync ended: the shell asks the engine again (node: _wake.set())
            return
        self._req += 1
        node.running[url] = (self._req, gen)
        self.net.send(node.host, host_of(url), ("req", self._req, request))
        self.net.cancel(node.timeouts.get(url))
        node.timeouts[url] = self.net.timer(node.host, REQUEST_TIMEOUT_MS, ("timeout", url, self._req))

    def deliver(self, ev: Any) -> None:
        node = self.nodes[ev.dst]
        kind = ev.payload[0]
        if kind == "tick":
            if ev.payload[1] != node.tick_at:
                return  # replaced by an earlier tick
            node.tick_at = None
            self.tick(node)
        elif kind == "req":
            _k, rid, request = ev.payload
            self.net.send(node.host, ev.src, ("reply", rid, node.serve(request, self.rng)))
        elif kind == "reply":
            _k, rid, body = ev.payload
            url = url_of(ev.src)
            running = node.running.get(url)
            if running and running[0] == rid:
                self._advance(node, url, running[1], body)
        elif kind == "timeout":
            _k, url, rid = ev.payload
            running = node.running.get(url)
            if running and running[0] == rid:
                self._advance(node, url, running[1], None, error=Timeout())
        elif kind == "cosign":
            node.accept_cosignature(self.nodes[ev.src].key, ev.payload[1], self.net.now_ms)
        elif kind == "notify":
            _k, digest, url = ev.payload
            peer_key = self.nodes[ev.src].key
            node.engine.add_peer(url, "contacted")
            node.engine.heard_from(peer_key, url, self.net.now_ms)
            if digest != node.store.digest():
                node.engine.wake(peer_key, url, self.net.now_ms)
                self.wake(node, 0)
        elif kind == "submit":
            node.submit([self.pool[i] for i in ev.payload[1]])
            self.wake(node, 0)
        elif kind == "chaos":
            self.chaos(ev.payload[1:])

    def chaos(self, what: tuple) -> None:
        if what[0] == "crash":
            self.net.crash(what[1])  # its timers and in-flight messages are gone, its store stays
        elif what[0] == "restart":
            self.net.restart(what[1])
            self.nodes[what[1]].boot()
            self.wake(self.nodes[what[1]], 0)
        elif what[0] == "partition":
            self.net.partition(what[1])
        elif what[0] == "heal":
            self.net.heal()

    def schedule(self) -> int:
        """Agents' batches and chaos at seeded times; returns when the last one happens."""
        sc, rng, net = self.sc, self.rng, self.net
        horizon = 0
        for _ in range(sc.batches):
            at = rng.randint(0, 600)
            host = rng.randrange(sc.nodes)
            picks = [rng.randrange(len(self.pool)) for _ in range(rng.randint(1, 4))]
            net.inject(net.now_ms + at, "msg", host, host, ("submit", picks))
            if rng.random() < 0.25:  # the agent retries at another node: two origins carry the events
                net.inject(net.now_ms + at + rng.randint(1, 300), "msg", host, rng.randrange(sc.nodes),
                          ("submit", picks))
            horizon = max(horizon, at + 300)
        for _ in range(sc.crashes):
            host, at = rng.randrange(sc.nodes), rng.randint(0, 600)
            net.inject(net.now_ms + at, "timer", -1, -1, ("chaos", "crash", host))
            net.inject(net.now_ms + at + rng.randint(50, 500), "timer", -1, -1, ("chaos", "restart", host))
            horizon = max(horizon, at + 600)
        for _ in range(sc.partitions):
            at = rng.randint(0, 600)
            hosts = list(range(sc.nodes))
            rng.shuffle(hosts)
            cut = rng.randint(1, sc.nodes - 1)
            net.inject(net.now_ms + at, "timer", -1, -1, ("chaos", "partition", (hosts[:cut], hosts[cut:])))
            net.inject(net.now_ms + at + rng.randint(100, 500), "timer", -1, -1, ("chaos", "heal"))
            horizon = max(horizon, at + 600)
        return horizon

    def run(self) -> str:
        net = self.net
        self.net_start = net.now_ms
        for node in self.nodes:
            self.wake(node, 0)
        horizon = net.now_ms + self.schedule()
        while True:
            ev = net.pop()
            if ev is None:
                self.fail("the network went idle (a node stopped ticking)")
            self.steps += 1
            if ev.dst == -1:
                self.chaos(ev.payload[1:])
                continue
            self.deliver(ev)
            self.check(self.nodes[ev.dst])
            if net.now_ms >= horizon:
                break
        return self.converge()

    def converge(self) -> str:
        net = self.net
        net.heal()
        for node in self.nodes:
            if not net.up(node.host):
                net.restart(node.host)
                node.boot()
                self.wake(node, 0)
        deadline = net.now_ms + CONVERGE_MS
        acked = {eid for n in self.nodes for _i, eid in n.acked}
        seen_versions = None
        while net.now_ms < deadline:
            versions = [n.store.version for n in self.nodes]
            if versions != seen_versions and len({n.store.digest() for n in self.nodes}) == 1 and all(
                    acked <= n.store.held_ids for n in self.nodes):
                for node in self.nodes:
                    self.check(node)
                return self.nodes[0].store.digest()
            seen_versions = versions
            ev = net.pop()
            if ev is None:
                self.fail("the network went idle before convergence")
            self.steps += 1
            if ev.dst == -1:
                continue  # chaos after the final heal: ignored
            self.deliver(ev)
            self.check(self.nodes[ev.dst])
        self.fail("no convergence within %d ms of the final heal" % CONVERGE_MS)
        return ""

    # -- invariants -------------------------------------------------------------------------

    def check(self, node: SimNode) -> None:
        """The invariants of one node (module docstring); its store unchanged since the last check
        (same version) is not re-read: nothing it holds can have moved."""
        if node.penalised_by_honest and not self.penalties_expected:
            self.fail(f"node {node.host} penalised an honest peer")
        version = (node.store.version, len(node.anchored))
        if self._checked.get(node.host) == version:
            return
        self._checked[node.host] = version
        for origin, lg in node.store.logs.items():
            self._check_log(node, origin, lg)
        self._check_acked(node)
        self._check_counts(node)
        self._check_anchored(node)
        if any(o in self.honest for o in node.store.forks):
            self.fail(f"node {node.host} flagged an honest origin forked")

    def _check_log(self, node: SimNode, origin: bytes, lg: Any) -> None:
        """prefix (entries and note) and monotone, for one origin's copy."""
        if origin not in self.honest:
            return  # a forked origin has no one true log
        truth = self.nodes_by_key(origin).store.logs.get(origin)
        if truth is None or lg.entries != truth.entries[:lg.size]:
            self.fail(f"node {node.host} holds a log of {origin.hex()[:8]} that is not a prefix of the origin's")
        last = self._sizes.get((node.host, origin), 0)
        if lg.size < last:
            self.fail(f"node {node.host}'s copy of {origin.hex()[:8]} shrank from {last} to {lg.size}")
        self._sizes[(node.host, origin)] = lg.size
        if lg.note is not None and (origin, lg.note) not in self._notes_ok:
            cp = open_checkpoint(lg.note, origin)[0]
            if cp.size != lg.note_size or cp.size > lg.size or lg.tree_hash_at(cp.size) != cp.root:
                self.fail(f"node {node.host} holds a note of {origin.hex()[:8]} that does not sign its entries")
            self._notes_ok.add((origin, lg.note))

    def _check_anchored(self, node: SimNode) -> None:
        """Every anchored checkpoint is a root of the node's own log, each larger than the last
        (so each is consistent with the one before: both are prefixes of one log)."""
        own = node.store.logs.get(node.key)
        last = 0
        for size, root in node.anchored:
            if own is None or size <= last or size > own.size or own.tree_hash_at(size) != root:
                self.fail(f"node {node.host} anchored a checkpoint at {size} that is not a root of its log")
            last = size

    def _check_acked(self, node: SimNode) -> None:
        own = node.store.logs.get(node.key)
        for index, eid in node.acked:
            if own is None or index >= own.size or own.ids[index] != eid:
                self.fail(f"node {node.host} lost acknowledged event {eid.hex()[:8]} at {index}")

    def _check_counts(self, node: SimNode) -> None:
        store, costs = node.store, self.costs
        known = {e for e in store.held_ids if e not in store.unknown}
        if set(store.counted) != known or any(v != costs[e] for e, v in store.counted.items()):
            self.fail(f"node {node.host} counts events other than each event it holds once")
        if store.cost_total != sum(store.counted.values()):
            self.fail(f"node {node.host}'s total is not the sum over the distinct events it holds")

    def nodes_by_key(self, key: bytes) -> SimNode:
        for n in self.nodes:
            if n.key == key:
                return n
        raise KeyError(key)



def run(seed: int, nodes: int = 5, batches: int = 5) -> tuple[str, Simulation]:
    sim = Simulation(Scenario.from_seed(seed, nodes, batches))
    return sim.run(), sim
