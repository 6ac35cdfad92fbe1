"""The replication shell's reads and checks over SQLite (node/store/), each run in one
connection by the Database's reader or writer: what the engine is fed (held sizes and notes,
forks), the answers served to peers (frontier, checkpoints to cosign) and the root check of an
older checkpoint (a fork if it differs)."""

from __future__ import annotations

from typing import Any, Callable

from consensus.messages import FORKS_EXCHANGED_MAX, FRONTIER_ORIGINS_MAX
from consensus.replication import Held, cluster_digest, merge
from consensus.verify import PeerProtocolError, fork_evidence
from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.errors import NotFound
from ledger.events import Envelope
from ledger.merkle import Frontier
from node.store import budgets as budget_store
from node.store import logs as log_store
from node.store import merkle as merkle_store
from node.store import peers as peer_store
from node.store.sqlite import Connection


def digest_state(conn: Connection) -> tuple[list[tuple[bytes, int, str]], list[bytes]]:
    """What the cluster digest covers: every origin held (size, note), and the forked origins."""
    return peer_store.frontier(conn, FRONTIER_ORIGINS_MAX), peer_store.forked_origins(conn)


def known(conn: Connection, origins: list[bytes]) -> tuple[set[bytes], dict[bytes, Held]]:
    """One read for a whole frontier: the forked origins, and what we hold of each origin."""
    held = {}
    for origin in origins:
        row = peer_store.held(conn, origin)
        if row is not None:
            held[origin] = Held(row[1], row[2])
    return set(peer_store.forked_origins(conn)), held


def adopt_note(conn: Connection, origin: bytes, cp: Checkpoint, note: str, keep: bool, held_note: str | None,
               now_ms: int) -> None:
    """An older (or equal) checkpoint than the entries held: its root must be our tree's at its
    size, else PeerProtocolError("fork") with evidence any node can check; keep: store the note."""
    row = log_store.origin_row(conn, origin)
    if row is None:
        raise PeerProtocolError("bad_frontier", "a checkpoint for entries we do not hold")
    ours = merkle_store.tree_hash_at(conn, row[0], cp.size)
    if ours != cp.root:
        # we hold the larger signed tree: its root at cp.size and the proof that it is a
        # prefix of our checkpoint make the evidence checkable by any node
        held_cp = open_checkpoint(held_note, origin)[0] if held_note else None
        if held_cp is None or held_cp.size < cp.size:
            raise PeerProtocolError("bad_frontier", "a checkpoint beyond our signed checkpoint")
        proof = merkle_store.consistency_proof_at(conn, row[0], cp.size, held_cp.size) if cp.size < held_cp.size else []
        evidence = fork_evidence(origin, note, held_note or "", ours if cp.size < held_cp.size else None, proof)
        raise PeerProtocolError("fork", f"signed root at {cp.size} differs from the verified entries held here",
                                evidence)
    if keep:
        log_store.store_checkpoint(conn, row[0], cp.size, cp.root, note, now_ms)


def peer_lag(conn: Connection, theirs: dict[bytes, int], merged: Callable[[bytes], bool]) -> tuple[int, int]:
    """(events, bytes) we hold of merged origins that a peer's frontier (theirs) does not."""
    events = nbytes = 0
    for origin, size, _note in peer_store.frontier(conn, FRONTIER_ORIGINS_MAX):
        if not merged(origin):
            continue
        have = theirs.get(origin, 0)
        if size > have:
            row = log_store.origin_row(conn, origin)
            events += size - have
            nbytes += peer_store.bytes_from(conn, row[0], have) if row else 0
    return events, nbytes


def frontier_doc(conn: Connection, own_key: bytes, their_digest: str | None) -> dict[str, Any] | None:
    """GET /v1/peer/frontier: None when the asker's digest is ours (in sync), else every origin
    held (size, signed checkpoint), our digest and fork evidence (the caller adds known peers)."""
    origins, forked = digest_state(conn)
    digest = cluster_digest(origins, forked)
    if their_digest == digest:
        return None
    evidence = [f["evidence"] for f in peer_store.forks(conn) if "a" in f["evidence"]]
    return {
        "node": own_key.hex(),
        "origins": [{"origin": o.hex(), "size": s, "checkpoint": n} for o, s, n in origins],
        "digest": digest,
        "forks": evidence[:FORKS_EXCHANGED_MAX],
    }


def own_note_at(conn: Connection, origin_id: int, size: int) -> str:
    cp = log_store.checkpoint_at(conn, origin_id, size)
    if cp is None:
        raise NotFound("not_found", f"no checkpoint of this node at size {size}")
    return cp.note


def append_text(path: str, text: str) -> None:
    """The anchor sink when it is a file: one anchored checkpoint appended."""
    with open(path, "a") as f:
        f.write(text)
        f.flush()


def store_page(conn: Connection, book: Any, origin_id: int, checked: Any, note: str | None,
               now: int) -> tuple[Frontier, list[Envelope]]:
    """Writer thread: a verified page appended (with the origin's note at its end), and the budget
    effects of the events held nowhere yet (`merge`: each event id once); returns the new frontier
    and the envelopes of kinds this release does not know (stored, counted nowhere)."""
    envelopes = list(checked.envelopes)
    merged = merge(envelopes, log_store.find_entries(conn, [e.event.id for e in envelopes]))
    deltas: dict = {}
    for env in merged.count:
        # a metered event counts only if its origin or a configured meter signed it (PROTOCOL.md §6)
        for key, amount in book.observe(conn, env.event, now, origin=checked.origin).items():
            deltas[key] = deltas.get(key, 0) + amount
    frontier = merkle_store.load_frontier(conn, origin_id, checked.start)
    new_frontier, _ = log_store.append_batch(
        conn, origin_id, frontier, envelopes, now, (lambda size, root: note) if note else None,
        also=lambda c: budget_store.add_counters(c, deltas),
    )
    return new_frontier, list(merged.unknown)
