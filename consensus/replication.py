"""Replication's decisions, pure: which peer when, what to do with each origin a peer holds.

This module holds every choice anti-entropy makes; it does no I/O, reads no clock and no
randomness of its own (STYLE.md P1, P2). Its shells run what it decides and feed the results back:

- `node/replication.py` (HTTP, SQLite, asyncio tasks; pages pipelined across processes);
- `tests/sim/pure/` (an in-memory store on a seeded network and clock, thousands of seeds a minute).

One `ReplicationEngine` per node. The shell asks it, at `now_ms`:

    engine.due(now_ms, running, fetching)   -> peers to sync now (one frontier round trip each)
    engine.wait_ms(now_ms, running, fetching) -> how long the shell may sleep before asking again
    engine.plan_origin(peer, origin, size, untrusted_note, held, forks, own)
                                             -> an OriginPlan: skip | own_ahead | check_own | adopt | fetch
    engine.lag(origins, forks, held)        -> events the peer holds that we do not
    engine.record(peer, event, now_ms, ...) -> the peer's state after a result (the table below)

Time is `now_ms` (int ms), randomness the `random.Random` the engine was built with.

Peer states and their transitions (`TRANSITIONS`, applied by `record`):

    event        when                                     effect
    in_sync      the peer answered 204 (same digest)      ok; lags 0; due again by random pick only
    synced       a whole frontier was processed           ok; due again by random pick only
    failed       timeout, refused, HTTP error              failures+1; due after a jittered backoff
    penalised    the peer served something that does not  penalties+1; not contacted for
                 verify (PeerProtocolError)                PENALTY_BACKOFF_MS, not woken by notify
    self         the frontier is signed with our own key  never contacted again (our own address)
    woken        the peer notified us of news             due now, unless penalised
    heard_from   the peer made a signed request to us     a failing (not penalised) peer: due now

A peer's state as shown (`PeerState.status`): ok, failing (failures < DEAD_AFTER_FAILURES), dead,
penalised (while its penalty lasts). A peer that is not static leaves the table after
DROP_AFTER_FAILURES failures in a row (`drop_dead`).

Origin plans (`plan_origin`), for each origin of a peer's frontier:

    skip       not admitted, forked, the very note we hold, or an empty log
    own_ahead  a peer holds more of our own log than we do (restored from an old backup?): warn
    check_own  a peer's copy of our own log: its root must be our tree's at that size, else a fork
    adopt      a checkpoint at or below the size we hold: its root must be ours at that size
               (else a fork); keep the note if it is newer than the note we hold
    fetch      a larger checkpoint: prove it extends the one we hold (if any), then fetch the range
               [held size, cp.size) page by page (`pages`); cosign when the origin is the peer

Merge (`merge`): each event id is counted once across every origin that carries it, forked
origins are never merged (`plan_origin` skips them), and an event of a kind this release does not
know is stored and relayed but counted nowhere (docs/replication.md "Unknown kinds").
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Container, Iterable, Sequence

from consensus.verify import PeerProtocolError, open_origin_checkpoint
from ledger.checkpoint import Checkpoint
from ledger.events import Envelope, UnknownBody

CONCURRENT_PEERS = 4
VERIFIED_NOTES_MAX = 4096  # checkpoint notes whose origin signature was checked, remembered
GOSSIP_FANOUT = 2  # healthy peers pulled at random each interval (anti-entropy)
BACKOFF_MS_MAX = 30_000
BACKOFF_DOUBLINGS_MAX = 8
DEAD_AFTER_FAILURES = 5
DROP_AFTER_FAILURES = 12  # a peer that is not static leaves the table (about 5 minutes of failures)
PENALTY_BACKOFF_MS = 60_000
NEVER_MS = 2**62  # next_try_ms of a peer never contacted again
WAIT_MS_MIN = 5


@dataclass
class PeerState:
    url: str
    source: str  # static, discovered, exchanged, contacted
    node: bytes | None = None
    last_contact_ms: int | None = None
    failures: int = 0
    penalties: int = 0
    last_error: str | None = None
    next_try_ms: int = 0
    urgent: bool = True  # sync at once (new, notified us, or back from failing), not when picked at random
    lag_events: int = 0  # events the peer holds that we do not (as of its last frontier)
    peer_lag_events: int = 0  # events we hold that the peer does not
    peer_lag_bytes: int = 0
    origins: dict[str, int] = field(default_factory=dict)

    def penalised(self, now_ms: int) -> bool:
        return bool(self.penalties) and self.next_try_ms > now_ms

    def status(self, now_ms: int) -> str:
        if self.penalised(now_ms):
            return "penalised"
        if self.failures == 0:
            return "ok"
        return "dead" if self.failures >= DEAD_AFTER_FAILURES else "failing"

    def view(self, now_ms: int) -> dict[str, Any]:
        return {
            "url": self.url, "node": self.node.hex() if self.node else None, "source": self.source,
            "state": self.status(now_ms), "last_contact_ms": self.last_contact_ms, "failures": self.failures,
            "penalties": self.penalties, "last_error": self.last_error, "behind_events": self.lag_events,
            "peer_behind_events": self.peer_lag_events, "peer_behind_bytes": self.peer_lag_bytes,
        }


def backoff_ms(failures: int, interval_ms: int, rng: random.Random) -> int:
    """How long a peer that failed `failures` times in a row waits: doubling, capped, jittered to 50-100 %."""
    backoff = min(BACKOFF_MS_MAX, interval_ms * 2 ** min(failures, BACKOFF_DOUBLINGS_MAX))
    return int(backoff * (0.5 + rng.random() / 2))


@dataclass(frozen=True)
class Result:
    """What a sync attempt came to, for `record`: the error text for failed/penalised."""

    error: str | None = None


def _ok(peer: PeerState, now_ms: int) -> None:
    peer.failures, peer.last_error, peer.next_try_ms, peer.urgent = 0, None, now_ms, False


def _in_sync(peer: PeerState, now_ms: int, _e: ReplicationEngine, _r: Result) -> None:
    peer.last_contact_ms = now_ms
    peer.lag_events = peer.peer_lag_events = peer.peer_lag_bytes = 0
    _ok(peer, now_ms)


def _synced(peer: PeerState, now_ms: int, _e: ReplicationEngine, _r: Result) -> None:
    _ok(peer, now_ms)


def _failed(peer: PeerState, now_ms: int, e: ReplicationEngine, r: Result) -> None:
    peer.failures += 1
    peer.last_error = (r.error or "")[:300]
    peer.next_try_ms, peer.urgent = now_ms + backoff_ms(peer.failures, e.interval_ms, e.rng), False


def _penalised(peer: PeerState, now_ms: int, _e: ReplicationEngine, r: Result) -> None:
    peer.penalties += 1
    peer.last_error = r.error
    peer.next_try_ms, peer.urgent = now_ms + PENALTY_BACKOFF_MS, False


def _self(peer: PeerState, _now: int, _e: ReplicationEngine, _r: Result) -> None:
    peer.next_try_ms = NEVER_MS  # ourselves under another address: never contacted again


def _woken(peer: PeerState, now_ms: int, _e: ReplicationEngine, _r: Result) -> None:
    if not peer.penalised(now_ms):
        peer.next_try_ms, peer.urgent = 0, True


def _heard_from(peer: PeerState, _now: int, _e: ReplicationEngine, _r: Result) -> None:
    if peer.failures and not peer.penalties:
        peer.failures, peer.next_try_ms, peer.urgent = 0, 0, True


# The peer state table: event -> transition (module docstring).
TRANSITIONS: dict[str, Callable[[PeerState, int, "ReplicationEngine", Result], None]] = {
    "in_sync": _in_sync, "synced": _synced, "failed": _failed, "penalised": _penalised,
    "self": _self, "woken": _woken, "heard_from": _heard_from,
}


@dataclass(frozen=True)
class Held:
    """What this node holds of an origin: its stored size and its latest signed note (None: none)."""

    size: int
    note: str | None


@dataclass(frozen=True)
class OwnLog:
    """This node's own log as the engine needs it: its key, size and latest note."""

    key: bytes
    size: int
    note: str | None


@dataclass(frozen=True)
class OriginPlan:
    """What to do with one origin of a peer's frontier (module docstring)."""

    action: str  # skip, own_ahead, check_own, adopt, fetch
    origin: bytes
    cp: Checkpoint | None = None
    note: str = ""
    held_cp: Checkpoint | None = None  # fetch: the checkpoint to prove consistency from (None: first sight)
    held_note: str | None = None
    start: int = 0  # fetch: the first entry to fetch (re-read by the shell under its per-origin lock)
    keep: bool = False  # adopt: store the note (newer than ours)
    cosign: bool = False  # fetch: the origin is the peer itself: witness its checkpoint
    reason: str = ""


@dataclass(frozen=True)
class Merge:
    """A verified page split by what it does to the budget book."""

    count: tuple[Envelope, ...]  # held nowhere yet, known kind: fold into usage and policy
    unknown: tuple[Envelope, ...]  # a kind this release does not know: stored and relayed, counted nowhere
    duplicates: int  # held already (another origin carries it) or twice in the page


def merge(envelopes: Iterable[Envelope], held_ids: Container[bytes]) -> Merge:
    """Each event id counted once, whichever origins carry it; unknown kinds counted nowhere."""
    count, unknown, seen = [], [], set()
    dups = 0
    for env in envelopes:
        eid = env.event.id
        if eid in held_ids or eid in seen:
            dups += 1
            continue
        seen.add(eid)
        (unknown if isinstance(env.event.body, UnknownBody) else count).append(env)
    return Merge(tuple(count), tuple(unknown), dups)


def pages(start: int, size: int, entries_max: int) -> list[tuple[int, int]]:
    """The ranges [a, b) a fetch of [start, size) asks for, at most entries_max each.

    A peer may answer fewer entries than asked ("fewer than asked, never more"): the shell then
    asks from where the answer ended, so this is the plan when every answer is whole.
    """
    return [(a, min(size, a + entries_max)) for a in range(start, size, entries_max)]


def anchor_due(quorum: int, found_size: int | None, anchored_size: int) -> bool:
    """Witness policy's last step: send a checkpoint to the anchor sink once `quorum` witnesses
    cosigned it and it is larger than the last one anchored."""
    return quorum >= 1 and found_size is not None and found_size > anchored_size


class ReplicationEngine:
    """One node's replication decisions (module docstring). Holds the peer table and a cache of
    checkpoint notes whose signature was checked; everything else is passed in."""

    def __init__(self, own_key: bytes, *, interval_ms: int, peer_count_max: int, rng: random.Random,
                 admitted: Callable[[bytes], bool], static_peers: Sequence[str] = ()):
        self.own_key = own_key
        self.interval_ms, self.peer_count_max = interval_ms, peer_count_max
        self.rng = rng
        self.admitted = admitted
        self.peers: dict[str, PeerState] = {}
        for url in static_peers:
            self.peers[url.rstrip("/")] = PeerState(url.rstrip("/"), "static")
        self.next_round_ms = 0
        self.own_url: str | None = None
        self._verified_notes: dict[tuple[bytes, str], Checkpoint] = {}

    # -- the peer table ----------------------------------------------------------------------

    def record(self, peer: PeerState, event: str, now_ms: int, error: str | None = None) -> None:
        """Apply one transition of the table (module docstring) to a peer."""
        TRANSITIONS[event](peer, now_ms, self, Result(error))

    def add_peer(self, url: str, source: str, *, valid: bool = True) -> PeerState | None:
        """A peer we were told of (exchanged), found (discovered) or that called us (contacted).
        valid: the shell checked the URL's form. Returns the new entry, or None if not added."""
        url = url.rstrip("/")
        if not valid or url in self.peers or url == self.own_url or len(self.peers) >= self.peer_count_max:
            return None
        # a peer we were told about waits for its turn at random; one we found or that called us is tried now
        peer = self.peers[url] = PeerState(url, source, urgent=source != "exchanged")
        return peer

    def peers_of(self, node: bytes, url: str | None) -> list[PeerState]:
        """Our entries for a node: by its key once we learned it, else by the URL it advertises
        (a peer that was in sync from the start never sent us a frontier naming its key)."""
        url = url.rstrip("/") if url else None
        return [p for p in self.peers.values() if p.node == node or (p.node is None and p.url == url)]

    def wake(self, node: bytes, url: str | None, now_ms: int) -> None:
        """A peer has news: only that peer is made due (a push costs one round trip, not N)."""
        for peer in self.peers_of(node, url):
            self.record(peer, "woken", now_ms)

    def heard_from(self, node: bytes, url: str | None, now_ms: int) -> bool:
        """An admitted node made a signed request to us: True if a failing peer became due."""
        woke = False
        for peer in self.peers_of(node, url):
            before = peer.failures
            self.record(peer, "heard_from", now_ms)
            woke |= bool(before) and not peer.failures
        return woke

    def drop_dead(self) -> list[PeerState]:
        """Peers that failed DROP_AFTER_FAILURES times in a row leave the table, unless configured."""
        gone = [p for p in self.peers.values() if p.source != "static" and p.failures >= DROP_AFTER_FAILURES]
        for peer in gone:
            del self.peers[peer.url]
        return gone

    def notify_targets(self) -> list[PeerState]:
        """Who hears of our news: every peer not dead, including those whose key we have not learned
        (one that was in sync from the start only ever answered 204, and it needs the news as much)."""
        return [p for p in self.peers.values() if p.node != self.own_key and p.failures < DEAD_AFTER_FAILURES]

    def known_urls(self, limit: int) -> list[str]:
        """The peer URLs we tell others of (peer exchange): live ones, at most limit."""
        live = [p.url for p in self.peers.values() if p.failures < DEAD_AFTER_FAILURES and p.node != self.own_key]
        return live[:limit]

    # -- scheduling --------------------------------------------------------------------------

    def due(self, now_ms: int, running: Container[str], fetching: bool) -> list[PeerState]:
        """Peers to sync now: urgent ones and failing ones whose backoff ended, and every
        interval GOSSIP_FANOUT healthy peers at random (anti-entropy, the backstop for a lost
        notification), unless we are catching up (no frontiers on the side)."""
        idle = self._idle(running)
        due = [p for p in idle if p.next_try_ms <= now_ms and (p.urgent or p.failures)]
        if now_ms >= self.next_round_ms and not fetching:
            healthy = [p for p in idle if p.next_try_ms <= now_ms and not p.urgent and not p.failures]
            due += self.rng.sample(healthy, min(GOSSIP_FANOUT, len(healthy)))
            self.next_round_ms = now_ms + self.interval_ms
        return due

    def wait_ms(self, now_ms: int, running: Container[str], fetching: bool = False) -> int:
        """How long the shell may wait before `due` can say something new (unless woken).

        While fetching, the next random round waits for the fetch to end (`due` holds it back),
        and the shell is woken when a sync ends: no polling every WAIT_MS_MIN meanwhile.
        """
        waits = [p.next_try_ms - now_ms for p in self._idle(running) if p.failures or p.urgent]
        if not fetching or not waits:
            waits.append(self.next_round_ms - now_ms if not fetching else self.interval_ms)
        return max(min(waits), WAIT_MS_MIN)

    def _idle(self, running: Container[str]) -> list[PeerState]:
        return [p for p in list(self.peers.values()) if p.url not in running and p.node != self.own_key]

    # -- planning ----------------------------------------------------------------------------

    def checkpoint(self, untrusted_note: str, origin: bytes) -> Checkpoint:
        """open_origin_checkpoint, remembered: every frontier repeats every origin's note."""
        key = (origin, untrusted_note)
        cp = self._verified_notes.get(key)
        if cp is None:
            cp = open_origin_checkpoint(untrusted_note, origin)[0]
            if len(self._verified_notes) >= VERIFIED_NOTES_MAX:
                self._verified_notes.pop(next(iter(self._verified_notes)))
            self._verified_notes[key] = cp
        return cp

    def lag(self, origins: Iterable[tuple[bytes, int, str]], forks: Container[bytes], held: dict[bytes, Held]) -> int:
        """Events the peer holds (of origins merged here: admitted, not forked) that we do not."""
        return sum(max(0, size - (held[o].size if o in held else 0)) for o, size, _n in origins
                   if o != self.own_key and self.admitted(o) and o not in forks)

    def plan_origin(self, peer_node: bytes | None, origin: bytes, size: int, untrusted_note: str,
                    held: Held | None, forks: Container[bytes], own: OwnLog) -> OriginPlan:
        """What to do with one origin of a peer's frontier; raises PeerProtocolError (the peer lied)."""
        if origin == own.key:
            return self._plan_own(origin, untrusted_note, own)
        if not self.admitted(origin) or origin in forks:
            return OriginPlan("skip", origin, reason="not merged")
        if held is not None and held.note == untrusted_note:
            return OriginPlan("skip", origin, reason="the checkpoint we hold")
        cp = self.checkpoint(untrusted_note, origin)
        if cp.size != size:
            raise PeerProtocolError("bad_frontier", "frontier size differs from its checkpoint")
        if cp.size == 0:
            return OriginPlan("skip", origin, reason="empty log")
        held_size = held.size if held else 0
        held_note = held.note if held else None
        held_cp = self.checkpoint(held_note, origin) if held_note else None
        if cp.size <= held_size:
            # an older (or equal) checkpoint than the entries we hold: its root must be our tree's
            # at that size (we store every size's hashes) or the origin signed two histories
            keep = held_cp is None or cp.size > held_cp.size
            return OriginPlan("adopt", origin, cp, untrusted_note, held_cp, held_note, keep=keep)
        return OriginPlan("fetch", origin, cp, untrusted_note, held_cp if held_cp and held_cp.size else None,
                          held_note, start=held_size, cosign=origin == peer_node)

    def _plan_own(self, origin: bytes, untrusted_note: str, own: OwnLog) -> OriginPlan:
        """A peer's copy of our own log must be a prefix of our log, else this key signed two
        histories (restored from an old backup, or the key is in two places): the key is burnt."""
        if untrusted_note == own.note:
            return OriginPlan("skip", origin, reason="our own checkpoint")
        cp = self.checkpoint(untrusted_note, origin)
        if cp.size > own.size:
            return OriginPlan("own_ahead", origin, cp, untrusted_note)
        if cp.size == 0:
            return OriginPlan("skip", origin, reason="empty log")
        return OriginPlan("check_own", origin, cp, untrusted_note, held_note=own.note)


def cluster_digest(origins: Iterable[tuple[bytes, int, str]], forked: Iterable[bytes] = ()) -> str:
    """SHA-256 over every non-empty origin's size and signed root, and the forked origins:
    equal digests, converged nodes (same logs, same fork flags).

    Empty logs are left out: they hold nothing to converge on, and a node learns
    of another's empty log only once it has something.
    """
    h = hashlib.sha256()
    for origin, size, note in sorted(origins):
        if size == 0:
            continue
        root = note.split("\n")[2] if note else ""
        h.update(f"{origin.hex()} {size} {root}\n".encode())
    for origin in sorted(forked):
        h.update(f"fork {origin.hex()}\n".encode())
    return h.hexdigest()
