"""A seeded, deterministic simulation of strict (escrow) and optimistic budgets across N nodes.

Theory of operation. One `random.Random(seed)` drives everything: the cluster
size (3, 5 or 7), the capacity, demand (about 10x the capacity per window,
skewed over the nodes), message delay, loss, duplication and reordering,
partitions and heals, crashes and restarts. Time is simulated, in integer ms,
on one event heap; nothing reads a clock. Many nodes run in one thread.

Each simulated node runs the real escrow protocol engine
(`consensus.escrow.EscrowEngine`: admit or want, the ask schedule, what to
give, pre-staging, window ends) over the real rules of rights
(`ledger.escrow`) and of optimistic budgets (`ledger.budget.evaluate`): the
code node/escrow.py runs, with this module as its shell. The shell runs the
engine's actions on a simulated network: `AskPeers` sends an ask to every
other member, an asked node answers with what the engine gives (logging the
transfer in its own origin log, checked by `ledger.escrow.check_give` and
debited in the same step, and pushing it: a notification to the receiver, which
pulls, as node/replication.py's `poke` does on every commit), `Pull` merges the
giver's log, `Give` (pre-staging) logs a transfer, and `Due.next_ms` schedules
the next poll.

Each simulated node keeps what a real node keeps durably: its own origin log
(usage records it admitted, run reservations and `escrow.transfer` records it
gave), and the logs of other origins it merged (prefixes, extended by
anti-entropy pulls like node/replication.py's), and counters summed over them.
Its engine (pending asks, asks heard this window) is volatile: a crash resets it.

Invariants, after every step (from the cluster's counters) and every 5000 steps
and at the end (recomputed from the logs, a pair assertion):
* zero strict overspend: the union of every node's own log (crashed nodes
  included, partitioned or not) never consumes + holds more than a key's capacity;
* rights conserved: transfers credited never exceed transfers debited, so the
  rights every node believes it holds sum to at most the capacity, and the true
  rights (every transfer that exists counted) sum to exactly the capacity;
* nothing granted twice: every transfer record is credited at most once, by the
  member it names, and only after its giver debited it.
A failure raises `SimFailure` naming `ATS_SIM_SEED=<seed>`, which replays it.

This module imports only `ledger`, `consensus` and the standard library
(tests/sim/test_escrow_sim.py checks it).
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any

from consensus.escrow import AskPeers, EscrowEngine, Give, Membership
from ledger import escrow
from ledger.budget import Overage, Rule, evaluate
from ledger.errors import LedgerError
from tests.sim.escrow.node import WINDOW_MS, Record, SimFailure, SimNode, sim_bounds

SCOPE = ("team", "research", "act.cost", "sim")  # window "sim": WINDOW_MS long (sim_bounds)
WINDOWS = 2
RETRY_MS = 50  # Retry-After of a no_rights refusal: the agent tries again this much later
RETRY_FOR_MS = 2_000  # an agent retries a refused request this long; after that the refusal is final
PULL_MS = 200  # anti-entropy interval of each node
KEYS = tuple(SCOPE + (w * WINDOW_MS,) for w in range(WINDOWS))  # the strict keys of a schedule


@dataclass
class Options:
    """The knobs of one schedule, all drawn from its seed (PacketSimulatorOptions-like)."""

    seed: int
    nodes: int
    strict: bool
    capacity: int
    delay_ms: tuple[int, int]
    loss_pct: int
    dup_pct: int
    partitions: bool
    crashes: bool
    demand_factor: int = 10

    @classmethod
    def from_seed(cls, seed: int, *, strict: bool = True, partitions: bool | None = None,
                  crashes: bool | None = None) -> "Options":
        rng = random.Random(seed)
        return cls(
            seed=seed,
            nodes=rng.choice((3, 5, 7)),
            strict=strict,
            capacity=rng.randrange(100, 400),
            delay_ms=(rng.randrange(1, 5), rng.randrange(5, 60)),
            loss_pct=rng.randrange(0, 20),
            dup_pct=rng.randrange(0, 10),
            partitions=rng.random() < 0.7 if partitions is None else partitions,
            crashes=rng.random() < 0.5 if crashes is None else crashes,
        )


class Sim:
    def __init__(self, opts: Options):
        self.opts = opts
        self.rng = random.Random(opts.seed * 7919 + 1)
        self.members = tuple(bytes([i + 1]) * 32 for i in range(opts.nodes))
        self.cluster: dict[tuple[str, escrow.Key], int] = {}
        membership = Membership.of(self.members)
        self.nodes = {k: SimNode(k, EscrowEngine(k, membership, bounds=sim_bounds), opts.capacity, cluster=self.cluster)
                      for k in self.members}
        self.heap: list[tuple[int, int, str, Any]] = []
        self.seq = 0
        self.now = 0
        self.groups: dict[bytes, int] | None = None  # partition: node -> side
        self.runs = 0
        self.stats: dict[str, Any] = {"admitted": 0, "refused": 0, "transfers": 0, "messages": 0,
                                      "first_refusal_used": {}, "final_refusal_used": {}, "steps": 0,
                                      "final_refusals_that_fit": 0}
        # demand: a skewed subset of nodes carries 10x the capacity per window
        weights = [self.rng.choice((0, 1, 1, 3, 10)) for _ in self.members]
        if not any(weights):
            weights[0] = 1
        self.weights = dict(zip(self.members, weights))

    # -- helpers ---------------------------------------------------------------------------

    def key_at(self, ts: int) -> escrow.Key:
        start = ts - ts % WINDOW_MS
        return SCOPE + (start,)

    def capacity(self, node: SimNode, key: escrow.Key) -> int:
        """The window's capacity; in optimistic mode, less the previous window's debt as node sees it."""
        if self.opts.strict or key[4] == 0:
            return self.opts.capacity
        prev = key[:4] + (key[4] - WINDOW_MS,)
        return escrow.allowance(self.opts.capacity, escrow.overspend(node.union_used(prev), self.opts.capacity))

    def at(self, t: int, what: str, data: Any) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, what, data))

    def connected(self, a: bytes, b: bytes) -> bool:
        return self.groups is None or self.groups[a] == self.groups[b]

    def send(self, src: bytes, dst: bytes, what: str, data: Any) -> None:
        """Seeded network: loss, duplication, delay (so reordering); partitions drop."""
        if not self.connected(src, dst) or self.rng.randrange(100) < self.opts.loss_pct:
            return
        copies = 2 if self.rng.randrange(100) < self.opts.dup_pct else 1
        lo, hi = self.opts.delay_ms
        for _ in range(copies):
            self.at(self.now + self.rng.randint(lo, hi), what, (src, dst, data))

    # -- schedule ----------------------------------------------------------------------------

    def schedule(self) -> None:
        o = self.opts
        total_w = sum(self.weights.values())
        for w in range(WINDOWS):
            start = w * WINDOW_MS
            # demand: factor x capacity per window, in amounts of 1..4 (mean 2.5)
            requests = o.demand_factor * o.capacity * 2 // 5
            for _ in range(requests):
                pick = self.rng.randrange(total_w)
                for node, weight in self.weights.items():
                    if pick < weight:
                        break
                    pick -= weight
                t = start + self.rng.randrange(WINDOW_MS)
                self.at(t, "demand", (node, self.rng.randint(1, 4), t))
        for node in self.members:
            for t in range(self.rng.randrange(PULL_MS), WINDOWS * WINDOW_MS, PULL_MS):
                self.at(t, "tick", node)
        end = WINDOWS * WINDOW_MS
        if o.partitions:
            t = 0
            while t < end:
                t += self.rng.randrange(500, 10_000)
                self.at(t, "partition", None)
                t += self.rng.randrange(500, 8_000)
                self.at(t, "heal", None)
        if o.crashes:
            for _ in range(self.rng.randrange(1, 4)):
                t = self.rng.randrange(end)
                victim = self.rng.choice(self.members)
                self.at(t, "crash", victim)
                self.at(t + self.rng.randrange(500, 8_000), "restart", victim)

    def run(self) -> dict[str, Any]:
        self.schedule()
        while self.heap:
            self.now, _seq, what, data = heapq.heappop(self.heap)
            getattr(self, "_" + what)(data)
            self.stats["steps"] += 1
            self.check()
        self.check(full=True)
        return self.result()

    # -- handlers -------------------------------------------------------------------------------

    def _demand(self, data: tuple[bytes, int, int]) -> None:
        node_key, amount, first_ms = data
        node = self.nodes[node_key]
        if not node.up or self.now >= WINDOWS * WINDOW_MS:
            return  # the agent cannot reach its node: it gives up
        key = self.key_at(self.now)
        if self.key_at(first_ms) != key:
            return  # the request's window is over
        before = self.stats["refused"]
        self._try(node, key, amount)
        if self.stats["refused"] > before:
            if self.now - first_ms < RETRY_FOR_MS:
                # the agent backs off: Retry-After doubles from RETRY_MS on each refusal
                self.at(self.now + max(RETRY_MS, self.now - first_ms), "demand", data)
            else:
                if key[4] not in self.stats["final_refusal_used"]:
                    self.stats["final_refusal_used"][key[4]] = self.union_total(key)
                    # rights were left in the cluster for this event: they did not gather in time
                    fits = self.union_total(key) + amount <= self.opts.capacity
                    self.stats["final_refusals_that_fit"] += fits

    def _try(self, node: SimNode, key: escrow.Key, amount: int) -> None:
        node_key = node.key
        # one request in five is a run: reserve an estimate, post the actual later
        if self.rng.randrange(5) == 0:
            estimate = amount + self.rng.randint(0, 3)
            if self.admit(node, key, estimate, reserve=True):
                self.runs += 1
                run = self.runs
                node.append(Record("reserve", key, estimate, run=run))
                self.at(self.now + self.rng.randint(1, 400), "post", (node_key, run, key, estimate, amount))
            return
        if self.admit(node, key, amount):
            node.append(Record("use", key, amount))

    def _post(self, data: tuple) -> None:
        node_key, run, rkey, estimate, actual = data
        node = self.nodes[node_key]
        if not node.up:
            self.at(self.now + RETRY_MS, "post", data)  # the agent retries until its node is back
            return
        key = self.key_at(self.now)
        # the hold is released by the post; the actual spend is admitted against this window
        release = estimate if key == rkey else 0
        ok = self.admit(node, key, actual, extra_held=-release)
        # a refused post voids the run: nothing charged, the hold released (post of 0)
        node.append(Record("post", key if ok else rkey, actual if ok else 0, run=run))

    def admit(self, node: SimNode, key: escrow.Key, amount: int, *, reserve: bool = False, extra_held: int = 0) -> bool:
        """The admission decision, through the same engine and rules the node uses."""
        held = node.held(key) + extra_held
        if self.opts.strict:
            # a post: its own hold is released (extra_held < 0) as its actual cost is consumed,
            # exactly as node/budgets.py passes the run's new hold and the spend to the same rule
            ok, wanted = node.engine.admit(key, node.account(key, self.opts.capacity), held, amount)
            if ok:
                self.stats["admitted"] += 1
            else:
                self.refused(key)
            if wanted:
                self.poll(node)  # the node wakes its asking loop
            return ok
        capacity = self.capacity(node, key)
        rule = Rule(SCOPE[0], SCOPE[1], SCOPE[2], SCOPE[3], capacity,
                    Overage(soft_pct=100, hard_pct=100, throttle=False, suspend=False, reserve_pct=0), "sim")
        used = node.union_used(key)
        verdict = evaluate(rule, used, held, max(0, amount), self.now, key[4] + WINDOW_MS, None)
        if not verdict.ok:
            self.refused(key)
        else:
            self.stats["admitted"] += 1
        return verdict.ok

    def refused(self, key: escrow.Key) -> None:
        self.stats["refused"] += 1
        if key[4] not in self.stats["first_refusal_used"]:
            self.stats["first_refusal_used"][key[4]] = self.union_total(key)

    # -- the engine's actions ---------------------------------------------------------------------

    def poll(self, node: SimNode) -> None:
        """Run the engine's ask schedule now: send the due asks, poll again when the others are due."""
        due = node.engine.asks_due(self.now)
        for ask in due.asks:
            self.send_ask(node, ask)
        if due.next_ms is not None and (node.poll_at is None or node.poll_at <= self.now or due.next_ms < node.poll_at):
            node.poll_at = due.next_ms
            self.at(due.next_ms, "poll", node.key)

    def _poll(self, node_key: bytes) -> None:
        node = self.nodes[node_key]
        if node.poll_at == self.now:
            node.poll_at = None
        if node.up:
            self.poll(node)

    def send_ask(self, node: SimNode, ask: AskPeers) -> None:
        for peer in node.engine.members.at(ask.key[4]):
            if peer != node.key:
                self.stats["messages"] += 1
                self.send(node.key, peer, "ask", (ask.key, ask.amount))

    def _ask(self, data: tuple) -> None:
        """An asked member: the engine decides what to give; the answer goes back to the asker."""
        src, dst, (key, amount) = data
        node = self.nodes[dst]
        if not node.up:
            return
        given = node.engine.answer_ask(self.now, src, key, amount, node.account(key, self.opts.capacity), node.held(key))
        if given > 0:
            self.give(node, Give(key, src, given))
        self.send(dst, src, "answer", given)

    def give(self, node: SimNode, g: Give) -> None:
        """Log a transfer: checked by the holder-only rule, and debited in the same step (one transaction)."""
        escrow.check_give(node.key, g.to, g.amount, node.engine.members.at(g.key[4]), node.account(g.key, self.opts.capacity),
                          node.held(g.key))  # raises on a bad transfer
        node.append(Record("transfer", g.key, g.amount, to=g.to))
        self.stats["transfers"] += 1
        # the commit pushes it (node/replication.py: poke, notify): the receiver pulls from the giver
        self.send(node.key, g.to, "notify", None)

    def _notify(self, data: tuple) -> None:
        src, dst, _ = data
        if self.nodes[dst].up:
            self.pull(dst, src)

    def _answer(self, data: tuple) -> None:
        src, dst, given = data
        node = self.nodes[dst]
        if node.up:
            for pull in node.engine.answered(src, given):
                self.pull(dst, pull.peer)  # the giver's log holds the transfer: merge it now

    def _tick(self, node_key: bytes) -> None:
        node = self.nodes[node_key]
        if not node.up:
            return
        peers = [p for p in self.members if p != node_key]
        self.pull(node_key, self.rng.choice(peers))
        if self.opts.strict:
            for g in node.engine.prestage(self.now, node):
                self.give(node, g)

    def pull(self, node_key: bytes, peer: bytes) -> None:
        node = self.nodes[node_key]
        have = {o: len(node.log(o)) for o in self.members}
        self.stats["messages"] += 1
        self.send(node_key, peer, "frontier", have)

    def _frontier(self, data: tuple) -> None:
        src, dst, have = data
        peer = self.nodes[dst]
        if not peer.up:
            return
        ranges = {}
        for origin in self.members:
            log = peer.log(origin)
            if len(log) > have.get(origin, 0):
                ranges[origin] = (have[origin], list(log[have[origin]:]))
        if ranges:
            self.send(dst, src, "entries", ranges)

    def _entries(self, data: tuple) -> None:
        src, dst, ranges = data
        node = self.nodes[dst]
        if not node.up:
            return
        for origin, (start, records) in ranges.items():
            if origin == node.key:
                continue  # our own log comes from us only
            log = node.log(origin)
            if start <= len(log):
                for r in records[len(log) - start:]:  # a prefix, extended; duplicates change nothing
                    log.append(r)
                    node.merge(origin, len(log) - 1, r)

    def _partition(self, _data: Any) -> None:
        if self.rng.randrange(3) == 0:  # isolate one node
            lone = self.rng.choice(self.members)
            self.groups = {m: int(m == lone) for m in self.members}
        else:
            self.groups = {m: self.rng.randrange(2) for m in self.members}

    def _heal(self, _data: Any) -> None:
        self.groups = None

    def _crash(self, node_key: bytes) -> None:
        node = self.nodes[node_key]
        node.up = False
        # volatile state is lost; the logs (own and merged) are durable, like SQLite's
        node.engine.crash()
        node.poll_at = None

    def _restart(self, node_key: bytes) -> None:
        self.nodes[node_key].up = True

    # -- invariants -----------------------------------------------------------------------------

    def union_total(self, key: escrow.Key) -> int:
        """Consumption in key over the union of every node's own log (from their counters)."""
        return self.cluster.get(("used", key), 0)

    def keys(self) -> list[escrow.Key]:
        return list(KEYS)

    def check(self, full: bool = False) -> None:
        """After every step: no strict overspend, rights conserved (from the cluster's counters).

        Every 5000 steps and at the end the same is recomputed from the logs themselves (a pair
        assertion, STYLE P4), with every credit traced to the transfer it came from.
        """
        if not self.opts.strict:
            return
        full = full or self.stats["steps"] % 5000 == 0
        for key in KEYS:
            c = self.cluster
            used, held = c.get(("used", key), 0), c.get(("held", key), 0)
            if full:
                self.check_logs(key, used, held)
            if used + held > self.opts.capacity:
                self.fail(f"strict overspend: {key} used {used} + held {held} > capacity {self.opts.capacity}")
            if c.get(("received", key), 0) > c.get(("given", key), 0):
                self.fail(f"rights created: {key} credited {c.get(('received', key), 0)} > debited {c.get(('given', key), 0)}")

    def fail(self, what: str) -> None:
        raise SimFailure(f"{what} at t={self.now} ms; replay with ATS_SIM_SEED={self.opts.seed}")

    def check_logs(self, key: escrow.Key, used: int, held: int) -> None:
        held_check = sum(n.held(key) for n in self.nodes.values())
        if held_check != held:
            self.fail(f"held {held} differs from the nodes' {held_check}")
        check_used = sum(r.amount for n in self.nodes.values() for r in n.own if r.key == key and r.kind in ("use", "post"))
        if check_used != used:
            self.fail(f"counters {used} differ from the logs {check_used}")
        self.check_conservation(key)

    def check_conservation(self, key: escrow.Key) -> None:
        """True rights (all transfers that exist counted) sum to the capacity; every credit is one
        transfer to that node that exists in its giver's log, credited once."""
        rights = 0
        for n in self.nodes.values():
            acct = escrow.Account(escrow.share(self.opts.capacity, self.members, n.key))
            acct.given = sum(r.amount for r in n.own if r.kind == "transfer" and r.key == key)
            acct.received = sum(r.amount for m in self.nodes.values() for r in m.own
                                if r.kind == "transfer" and r.key == key and r.to == n.key)
            credited = sum(n.merged[o][i].amount for o, i in n.credited
                           if self.nodes[o].own[i] is n.merged[o][i] and n.merged[o][i].key == key)
            if credited != n.received.get(key, 0) or acct.received < credited:
                self.fail(f"credits {n.received.get(key, 0)} are not the transfers merged ({credited}) or exceed"
                          f" those given ({acct.received})")
            if n.given.get(key, 0) != acct.given:
                self.fail(f"debits {n.given.get(key, 0)} differ from the transfers logged ({acct.given})")
            rights += acct.rights
        if rights != self.opts.capacity:
            self.fail(f"rights not conserved: {rights} != {self.opts.capacity}")

    def result(self) -> dict[str, Any]:
        totals = [self.union_total(k) for k in self.keys()]
        cap = self.opts.capacity
        first = self.stats["first_refusal_used"]
        final = self.stats["final_refusal_used"]
        return {
            "seed": self.opts.seed,
            "nodes": self.opts.nodes,
            "capacity": cap,
            "used": totals,
            "overspend": [escrow.overspend(t, cap) for t in totals],
            # after settlement: what ran over the capacity of all windows together (debt carried)
            "overspend_settled": escrow.overspend(sum(totals), cap * len(totals)),
            "utilisation": [t / cap for t in totals],
            "used_before_first_refusal": [first.get(k[4], t) / cap for k, t in zip(self.keys(), totals)],
            "used_before_final_refusal": [final.get(k[4], t) / cap for k, t in zip(self.keys(), totals)],
            **{k: v for k, v in self.stats.items() if not k.endswith("refusal_used")},
        }


def run_seed(seed: int, **kw: Any) -> dict[str, Any]:
    """One schedule from its seed; raises SimFailure (naming the seed) on a broken invariant."""
    try:
        return Sim(Options.from_seed(seed, **kw)).run()
    except LedgerError as e:  # a rule the pure core refused: a bug in the simulated node
        raise SimFailure(f"{e.code}: {e.message}; replay with ATS_SIM_SEED={seed}") from e
