"""One simulated node: the pure replication engine, an in-memory store, and a shell that runs the
engine's decisions over messages instead of HTTP (what node/replication.py does with aiohttp).

A sync with one peer is a generator: it yields requests (`("frontier", digest)`,
`("entries", origin, start, end)`, `("proof", origin, m, n)`) and is resumed with the reply's
bytes (None for a 204) or thrown a `Timeout`. The server side answers from the store with the
same encoders the wire modules define (consensus/peermsg/), so every reply is decoded from
untrusted bytes as a node would.
"""

from __future__ import annotations

import random
from typing import Any, Generator

from consensus.peermsg import entries as msg_entries
from consensus.peermsg import frontier as msg_frontier
from consensus.peermsg import proof as msg_proof
from consensus.replication import OriginPlan, OwnLog, PeerState, ReplicationEngine, pages
from consensus.verify import (
    PeerProtocolError, check_consistent, check_fork_evidence, prefix_checkpoint, verify_range,
)
from consensus.peermsg import cosign as msg_cosign
from consensus.replication import anchor_due
from ledger.checkpoint import CheckpointSigner, cosign, open_checkpoint, origin_line, verify_cosignature
from ledger.events import Envelope
from ledger.signing import public_key_from_seed
from tests.sim.pure.store import MemStore

REQUEST_TIMEOUT_MS = 1_000
PEERS_EXCHANGED_MAX = 64


class Timeout(Exception):
    pass


_HOSTS: dict[bytes, int] = {}  # node key -> host, filled as nodes are built (the sim's address book)


def host_of_key(key: bytes) -> int:
    return _HOSTS[key]


def url_of(host: int) -> str:
    return f"http://10.0.0.{host + 1}:8787"


def host_of(url: str) -> int:
    return int(url.split("//")[1].split(":")[0].rsplit(".", 1)[1]) - 1


class SimNode:
    def __init__(self, host: int, seed: bytes, *, static: list[int], interval_ms: int, entries_max: int,
                 rng: random.Random, admitted: set[bytes] | None = None):
        self.host = host
        self.seed = seed
        self.key = public_key_from_seed(seed)
        self.signer = CheckpointSigner(seed)
        _HOSTS[self.key] = host
        self.store = MemStore()
        self.static, self.interval_ms, self.entries_max = static, interval_ms, entries_max
        self.admitted_set = admitted
        self.rng = rng
        self.acked: list[tuple[int, bytes]] = []  # (index in own log, event id) of every acknowledged event
        self.notes: dict[int, str] = {}  # every checkpoint this node signed of its own log, by size (durable)
        self.penalised_by_honest = 0
        self.cosigned: dict[int, dict[bytes, str]] = {}  # size of our log -> witness -> cosignature line
        self.anchored: list[tuple[int, bytes]] = []  # (size, root) of every checkpoint anchored, in order
        self.witness_quorum = 1
        self.outbox: list[tuple[int, Any]] = []  # messages the shell sends once the step is done (host, payload)
        self.tick_at: int | None = None  # the node's one pending timer (sim.py wake)
        self.tick_epoch = -1
        self.tick_timer: Any = None
        self.boot()

    def boot(self) -> None:
        """Start (or restart after a crash): a new engine; the store is what survived."""
        self.engine = ReplicationEngine(self.key, interval_ms=self.interval_ms, peer_count_max=64, rng=self.rng,
                                        admitted=self.admitted, static_peers=[url_of(h) for h in self.static])
        self.engine.own_url = url_of(self.host)
        self.running: dict[str, tuple[int, Generator[Any, Any, None]]] = {}  # url -> (request id, sync)
        self.fetching: set[bytes] = set()  # origins being fetched (node/replication.py's per-origin lock)
        self.push = False
        self.timeouts: dict[str, Any] = {}  # url -> the pending request's timeout timer (net.Network.cancel)

    def admitted(self, origin: bytes) -> bool:
        return self.admitted_set is None or origin in self.admitted_set

    def own(self) -> OwnLog:
        lg = self.store.logs.get(self.key)
        return OwnLog(self.key, lg.note_size if lg else 0, lg.note if lg else None)

    # -- agents -------------------------------------------------------------------------------

    def submit(self, envelopes: list[Envelope]) -> list[bytes]:
        """An agent's batch: events held nowhere here are appended to our log (a duplicate is an outcome)."""
        new = [e for e in envelopes if e.event.id not in self.store.held_ids]
        seen: set[bytes] = set()
        new = [e for e in new if not (e.event.id in seen or seen.add(e.event.id))]
        if not new:
            return []
        start = self.store.held(self.key).size if self.store.held(self.key) else 0
        note = self.store.append_own(self.key, new, self.signer.sign)
        self.notes[self.store.logs[self.key].size] = note
        self.acked += [(start + i, e.event.id) for i, e in enumerate(new)]
        self.push = True
        return [e.event.id for e in new]

    # -- serving peers ------------------------------------------------------------------------

    def serve(self, request: tuple, rng: random.Random) -> bytes | None:
        kind = request[0]
        if kind == "frontier":
            if request[1] == self.store.digest():
                return None
            return msg_frontier.encode(msg_frontier.Frontier(
                self.key, tuple(self.store.frontier_rows()), tuple(self.engine.known_urls(PEERS_EXCHANGED_MAX)),
                tuple(e for e in self.store.forks.values() if "a" in e)[:16], self.store.digest()))
        if kind == "entries":
            _k, origin, start, end = request
            lg = self.store.logs[origin]
            end = min(end, lg.size)
            if end - start > 1 and rng.random() < 0.2:
                end = rng.randint(start + 1, end)  # fewer than asked, never more
            return msg_entries.encode(lg.entries[start:end])
        if kind == "proof":
            _k, origin, m, n = request
            return msg_proof.encode(self.store.logs[origin].proof(m, n))
        raise AssertionError(kind)

    def accept_cosignature(self, witness: bytes, body: bytes, now_ms: int) -> None:
        """POST /v1/peer/cosign: a witness's cosignature of our checkpoint at size, checked, stored;
        then the anchor policy (consensus.replication.anchor_due)."""
        size, sig = msg_cosign.decode(body)
        lg = self.store.logs.get(self.key)
        note = self.notes.get(size)
        if lg is None or note is None:
            return  # not a checkpoint of ours (a node answers 404 not_found)
        cp = open_checkpoint(note, self.key)[0]
        verify_cosignature(cp, sig, origin_line(witness), witness)
        self.cosigned.setdefault(size, {})[witness] = sig.line()
        quorum_sizes = [s for s, w in self.cosigned.items() if len(w) >= self.witness_quorum]
        found = max(quorum_sizes) if quorum_sizes else None
        last = self.anchored[-1][0] if self.anchored else -1
        if anchor_due(self.witness_quorum, found, last):
            assert found is not None
            self.anchored.append((found, open_checkpoint(self.notes[found], self.key)[0].root))

    # -- replicating ---------------------------------------------------------------------------

    def sync(self, peer: PeerState, now: Any) -> Generator[Any, Any, None]:
        """One sync with a peer (node/replication.py Replicator._sync); now() reads the sim clock."""
        engine = self.engine
        try:
            body = yield ("frontier", self.store.digest())
            if body is None:
                engine.record(peer, "in_sync", now())
                return
            frontier = msg_frontier.decode(body)
            peer.node = frontier.node
            if frontier.node == self.key:
                engine.record(peer, "self", now())
                return
            peer.last_contact_ms = now()
            for url in frontier.peers:
                engine.add_peer(url, "exchanged")
            for evidence in frontier.forks:
                origin, _a, _b = check_fork_evidence(evidence)
                if self.store.record_fork(origin, evidence):
                    self.push = True
            forks, held = self.store.known([o for o, _s, _n in frontier.origins])
            peer.lag_events = engine.lag(frontier.origins, forks, held)
            for origin, size, note in frontier.origins:
                forks, held = self.store.known([origin])  # others may have stored since the frontier came
                plan = engine.plan_origin(peer.node, origin, size, note, held.get(origin), forks, self.own())
                if plan.action in ("adopt", "check_own"):
                    self.store.adopt_note(origin, plan.cp, plan.note, plan.keep, plan.held_note)
                elif plan.action == "fetch":
                    yield from self._fetch(plan)
            engine.record(peer, "synced", now())
        except PeerProtocolError as e:
            engine.record(peer, "penalised", now(), f"{e.code}: {e.message}")
            self.penalised_by_honest += 1
            if e.code == "fork" and e.evidence:
                self.store.record_fork(bytes.fromhex(e.evidence["origin"]), e.evidence)
                self.push = True
        except Timeout:
            engine.record(peer, "failed", now(), "timeout")

    def _fetch(self, plan: OriginPlan) -> Generator[Any, Any, None]:
        cp, origin = plan.cp, plan.origin
        assert cp is not None
        if plan.held_cp is not None:
            proof = msg_proof.decode((yield ("proof", origin, plan.held_cp.size, cp.size)))
            check_consistent(plan.held_cp, plan.held_note, cp, plan.note, proof)
        if origin in self.fetching:
            return  # another sync fetches this origin now; the next round finds what is left
        self.fetching.add(origin)
        try:
            start = self.store.logs[origin].size if origin in self.store.logs else 0
            while start < cp.size:
                (_a, end), = pages(start, cp.size, self.entries_max)[:1]
                raw = msg_entries.decode((yield ("entries", origin, start, end)), end - start)
                end = start + len(raw)
                proof = msg_proof.decode((yield ("proof", origin, end, cp.size))) if end < cp.size else None
                lg = self.store.log(origin)
                page_cp = cp if proof is None else prefix_checkpoint(lg.frontier, start, raw, cp, proof)
                checked = verify_range(origin, lg.frontier, start, raw, page_cp, plan.note)
                self.store.append_verified(checked, plan.note if end == cp.size else None)
                start = end
            self.push = True  # relay: our peers may not reach the origin's holders directly
        finally:
            self.fetching.discard(origin)
        if plan.cosign:  # the origin is the peer: we just witnessed its log grow consistently
            line = cosign(cp, origin_line(self.key), self.seed, 1_780_000_000).line()
            self.outbox.append((host_of_key(origin), ("cosign", msg_cosign.encode(cp.size, line))))
