"""An in-memory log store for one simulated node: what node/store/ keeps in SQLite, as lists.

Every write is atomic (a Python call between two simulation steps), so a crash loses nothing a
call returned from: the store survives `crash`, the engine and in-flight work do not.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from consensus.replication import Held, cluster_digest, merge
from consensus.verify import PeerProtocolError, VerifiedRange, fork_evidence
from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.events import Envelope
from ledger.merkle import (
    Frontier, consistency_proof, consistency_proof_indexes, tree_hash, tree_hash_indexes,
)


@dataclass
class MemLog:
    """One origin's log as held here: entries, every stored hash, the latest signed note."""

    entries: list[bytes] = field(default_factory=list)
    ids: list[bytes] = field(default_factory=list)
    hashes: list[bytes] = field(default_factory=list)  # stored-hash order (ledger.merkle)
    frontier: Frontier = field(default_factory=Frontier)
    note: str | None = None
    note_size: int = 0

    @property
    def size(self) -> int:
        return len(self.entries)

    def append(self, raws: list[bytes], ids: list[bytes], frontier_before: Frontier) -> None:
        assert frontier_before.size == self.size
        from ledger.merkle import leaf_hash
        for raw, eid in zip(raws, ids):
            for index, h in self.frontier.append(leaf_hash(raw)):
                assert index == len(self.hashes)
                self.hashes.append(h)
            self.entries.append(raw)
            self.ids.append(eid)

    def tree_hash_at(self, n: int) -> bytes:
        return tree_hash(n, [self.hashes[i] for i in tree_hash_indexes(n)])

    def proof(self, m: int, n: int) -> list[bytes]:
        return consistency_proof(m, n, [self.hashes[i] for i in consistency_proof_indexes(m, n)])


class MemStore:
    def __init__(self) -> None:
        self.logs: dict[bytes, MemLog] = {}
        self.forks: dict[bytes, dict] = {}  # origin -> evidence
        self.held_ids: set[bytes] = set()
        self.counted: dict[bytes, int] = {}  # event id -> cost counted (each id once)
        self.cost_total = 0
        self.unknown: set[bytes] = set()  # ids of unknown-kind events stored (flagged, counted nowhere)
        self.version = 0  # bumped by every write (the digest cache and the invariant checker use it)
        self._digest: tuple[int, str] | None = None

    def changed(self) -> None:
        self.version += 1

    def log(self, origin: bytes) -> MemLog:
        lg = self.logs.get(origin)
        if lg is None:
            lg = self.logs[origin] = MemLog()
        return lg

    def held(self, origin: bytes) -> Held | None:
        lg = self.logs.get(origin)
        return Held(lg.size, lg.note) if lg is not None else None

    def known(self, origins: list[bytes]) -> tuple[set[bytes], dict[bytes, Held]]:
        held = {o: h for o in origins if (h := self.held(o)) is not None}
        return set(self.forks), held

    def frontier_rows(self) -> list[tuple[bytes, int, str]]:
        return [(o, lg.note_size, lg.note) for o, lg in sorted(self.logs.items()) if lg.note]

    def digest(self) -> str:
        if self._digest is None or self._digest[0] != self.version:
            self._digest = (self.version, cluster_digest(self.frontier_rows(), sorted(self.forks)))
        return self._digest[1]

    def record_fork(self, origin: bytes, evidence: dict) -> bool:
        if origin in self.forks:
            return False
        self.forks[origin] = evidence
        self.changed()
        return True

    def _count(self, envelopes: list[Envelope]) -> None:
        merged = merge(envelopes, self.held_ids)
        for env in merged.count:
            cost = getattr(env.event.body, "cost", 0) or 0
            self.counted[env.event.id] = self.counted.get(env.event.id, 0) + cost
            self.cost_total += cost
        self.unknown.update(e.event.id for e in merged.unknown)
        self.held_ids.update(e.event.id for e in envelopes)

    def append_own(self, origin: bytes, envelopes: list[Envelope], sign) -> str:
        """Our own accepted batch: appended, counted, checkpoint signed (one transaction)."""
        lg = self.log(origin)
        self._count(envelopes)
        lg.append([e.raw for e in envelopes], [e.event.id for e in envelopes], lg.frontier.copy())
        lg.note, lg.note_size = sign(lg.size, lg.frontier.root()), lg.size
        self.changed()
        return lg.note

    def append_verified(self, checked: VerifiedRange, note: str | None) -> None:
        """A verified page of a peer's copy of origin's log, its budget effects, and (last page) the note."""
        lg = self.log(checked.origin)
        if checked.start != lg.size:
            raise PeerProtocolError("bad_range", "page does not start at the size held")  # never: one fetch per origin
        envs = list(checked.envelopes)
        self._count(envs)
        lg.append([e.raw for e in envs], [e.event.id for e in envs], lg.frontier.copy())
        if note is not None:
            lg.note, lg.note_size = note, lg.size
        self.changed()

    def adopt_note(self, origin: bytes, cp: Checkpoint, note: str, keep: bool, held_note: str | None) -> None:
        """node/replication.py _adopt_note over the in-memory log: a root that differs is a fork."""
        lg = self.logs.get(origin)
        if lg is None:
            raise PeerProtocolError("bad_frontier", "a checkpoint for entries we do not hold")
        ours = lg.tree_hash_at(cp.size)
        if ours != cp.root:
            held_cp = open_checkpoint(held_note, origin)[0] if held_note else None
            if held_cp is None or held_cp.size < cp.size:
                raise PeerProtocolError("bad_frontier", "a checkpoint beyond our signed checkpoint")
            proof = lg.proof(cp.size, held_cp.size) if cp.size < held_cp.size else []
            raise PeerProtocolError("fork", f"signed root at {cp.size} differs",
                                    fork_evidence(origin, note, held_note or "", ours if cp.size < held_cp.size
                                                  else None, proof))
        if keep:
            lg.note, lg.note_size = note, cp.size
            self.changed()
