"""Replication: pull anti-entropy with every peer, verifying everything before it is stored.

Theory of operation. Each round, for each peer (bounded concurrency), the node
asks for the peer's *frontier* in one round trip: for every origin log the peer
holds, its size and the origin's signed checkpoint, plus the peers it knows
(peer exchange). For each origin admitted here (a `node.admit` record, or open
membership) that the peer holds further than we do:

1. the checkpoint must be signed by the origin itself (`consensus.verify`);
2. it must be consistent with the origin's last checkpoint we hold (a
   consistency proof from the peer; a failure is a fork: its evidence is
   stored and served, the origin is no longer merged, the peer penalised);
3. missing entries are fetched in pages of at most `replication_entries_max`;
   each page's envelopes must parse and carry valid agent signatures, and the
   tree they extend must be consistent with the signed root (one consistency
   proof per page), so each page is verified — and stored — on its own and
   memory stays bounded however far behind we are; the last page must give
   exactly the signed root, and is stored with the origin's note;
4. events held nowhere yet are folded into the budget book (usage and policy
   are computed over the union of origin logs, each event id counted once);
5. when the origin is the peer itself, we have just witnessed its log grow
   consistently: we cosign its checkpoint (C2SP cosignature/v1) and send the
   cosignature back.

Push is the same path triggered early: when this node commits a batch it
wakes the loop, so peers learn of new events within one round trip instead of
one interval. Peers that fail are backed off; peers that lie are penalised.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol
from urllib.parse import urlsplit

import aiohttp

from consensus.messages import (
    FORKS_EXCHANGED_MAX, FRONTIER_BYTES_MAX, FRONTIER_ORIGINS_MAX, NONCE_BYTES, PEERS_EXCHANGED_MAX, peer_headers,
)
from consensus.verify import (
    PeerProtocolError, check_consistent, check_fork_evidence, fork_evidence, open_origin_checkpoint, verify_range,
)
from ledger import encoding
from ledger.checkpoint import Checkpoint, NoteSignature, cosign, open_checkpoint, origin_line, verify_cosignature
from ledger.errors import NotFound
from ledger.merkle import Frontier, leaf_hash, verify_consistency
from node.aio import cancel_and_wait, read_bounded
from node.budgets import BudgetBook
from node import tls
from node.clock import SystemClock
from node.ingest import OwnLog
from node.store import budgets as budget_store
from node.store import logs as log_store
from node.store import merkle as merkle_store
from node.store import peers as peer_store
from node.store.sqlite import Connection, Database

logger = logging.getLogger("ats.replication")

CONCURRENT_PEERS = 4
VERIFIED_NOTES_MAX = 4096  # checkpoint notes whose origin signature was checked, remembered
GOSSIP_FANOUT = 2  # healthy peers pulled at random each interval (anti-entropy)
REQUEST_TIMEOUT_S = 10
BACKOFF_MS_MAX = 30_000
DEAD_AFTER_FAILURES = 5
PEER_KEEPALIVE_S = 5.0
DROP_AFTER_FAILURES = 12  # a peer that is not static leaves the table (about 5 minutes of failures)
PENALTY_BACKOFF_MS = 60_000


class Transport(Protocol):
    """How peer requests travel: HTTP in a node (`HttpTransport`), a seeded network in tests/sim."""

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      limit: int) -> tuple[int, bytes | None]:
        """(status, body), body None if it was larger than limit. Raises OSError/TimeoutError/ClientError."""
        ...


class HttpTransport:
    def __init__(self, session: aiohttp.ClientSession):
        self.session = session

    async def request(self, method: str, url: str, headers: dict[str, str], body: bytes,
                      limit: int) -> tuple[int, bytes | None]:
        async with self.session.request(method, url, headers=headers, data=body or None) as resp:
            return resp.status, await read_bounded(resp, limit)


@dataclass
class PeerState:
    url: str
    source: str  # static, discovered, exchanged
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

    def view(self, now_ms: int) -> dict[str, Any]:
        state = "ok" if self.failures == 0 else ("dead" if self.failures >= DEAD_AFTER_FAILURES else "failing")
        if self.penalties and self.next_try_ms > now_ms:
            state = "penalised"
        return {
            "url": self.url, "node": self.node.hex() if self.node else None, "source": self.source, "state": state,
            "last_contact_ms": self.last_contact_ms, "failures": self.failures, "penalties": self.penalties,
            "last_error": self.last_error, "behind_events": self.lag_events,
            "peer_behind_events": self.peer_lag_events, "peer_behind_bytes": self.peer_lag_bytes,
        }


class Replicator:
    def __init__(self, db: Database, own: OwnLog, book: BudgetBook, clock: SystemClock, *, static_peers: tuple[str, ...],
                 open_membership: bool, interval_ms: int, entries_max: int, peer_count_max: int, witness_quorum: int,
                 anchor_sink: str, transport: Transport | None = None, rng: random.Random | None = None,
                 ssl: Any = None, nonce: Callable[[int], bytes] = os.urandom):
        self._db, self._own, self._book, self._clock = db, own, book, clock
        self.open_membership = open_membership
        self._interval_ms, self._entries_max, self._peer_count_max = interval_ms, entries_max, peer_count_max
        self.witness_quorum, self._anchor_sink = witness_quorum, anchor_sink
        self.peers: dict[str, PeerState] = {url.rstrip("/"): PeerState(url.rstrip("/"), "static") for url in static_peers}
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._transport = transport
        self._task: asyncio.Task | None = None
        self._rng = rng or random.Random()
        self._nonce = nonce  # peer request nonces (consensus.messages): unique per request
        self._anchored_size = -1
        self.own_url: str | None = None  # advertised to peers, so a node we contact can contact us
        self._locks: dict[bytes, asyncio.Lock] = {}
        self._fetching = 0  # origin fetches in progress
        self._relay = False  # fetched entries not yet announced to our peers
        self._warned_own_size = 0  # a peer's larger copy of our own log, already logged
        self._changes = 0  # bumped by every store (poke): the cached digest is stale
        self._digest: tuple[int, str] | None = None
        self._verified_notes: dict[tuple[bytes, str], Checkpoint] = {}
        self._push = False
        self.on_store: Callable[[], None] | None = None  # after each page of a peer's entries is stored
        self.v1_compat = False  # also sign as ats-peer/v1 for 0.1 nodes (peer_protocol_v1, consensus/messages.py)
        self.ssl = ssl  # how peers' certificates are verified (node/tls.py client_ssl); None: system CAs
        self.workers: Any = None  # node/workers.py WorkerPool: pages are verified in another process

    # -- lifecycle --------------------------------------------------------------------------

    async def context(self) -> Any:
        """An aiohttp cleanup context: the replication loop lives between startup and cleanup."""
        # idle connections are dropped before a peer's http_head_timeout_ms (10 s by default) closes them
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                                              connector=tls.connector(self.ssl, keepalive_timeout=PEER_KEEPALIVE_S))
        if self._transport is None:
            self._transport = HttpTransport(self._session)
        self.start()
        try:
            yield
        finally:
            await self.stop()
            await self._session.close()

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="ats-replication")

    async def stop(self) -> None:
        if self._task is not None:
            await cancel_and_wait(self._task)

    def poke(self) -> None:
        """New events stored here: tell every peer now (push), so they pull within one round trip."""
        self._changes += 1
        self._push = True
        self._wake.set()

    async def digest(self) -> str:
        """Our cluster digest, recomputed only after something was stored (poke)."""
        changes = self._changes
        if self._digest is None or self._digest[0] != changes:
            value = await self._db.read(lambda c: cluster_digest(*digest_state(c)))
            self._digest = (changes, value)
        return self._digest[1]

    async def notified(self, node: bytes, url: str | None, their_digest: str | None) -> None:
        """POST /v1/peer/notify: a peer stored news. Pull from it, unless we hold all it holds
        already (its digest is ours: the news reached us first by another way)."""
        if their_digest is not None and their_digest == await self.digest():
            return
        self.wake(node, url)

    def _checkpoint(self, note: str, origin: bytes) -> Checkpoint:
        """open_origin_checkpoint, remembered: every frontier repeats every origin's note."""
        key = (origin, note)
        cp = self._verified_notes.get(key)
        if cp is None:
            cp = open_origin_checkpoint(note, origin)[0]
            if len(self._verified_notes) >= VERIFIED_NOTES_MAX:
                self._verified_notes.pop(next(iter(self._verified_notes)))
            self._verified_notes[key] = cp
        return cp

    def wake(self, node: bytes | None = None, url: str | None = None) -> None:
        """A peer told us it has news: pull from it now instead of at the next interval.

        Only that peer is made due, so a notification costs one frontier round trip,
        not one to every peer (which made a push O(N²) requests across a cluster).
        """
        if node is not None:
            now = self._clock.now_ms()
            for peer in self._peers_of(node, url):
                if not (peer.penalties and peer.next_try_ms > now):
                    peer.next_try_ms, peer.urgent = 0, True
        self._wake.set()

    def _peers_of(self, node: bytes, url: str | None) -> list[PeerState]:
        """Our entries for a node: by its key once we learned it, else by the URL it advertises
        (a peer that was in sync from the start never sent us a frontier naming its key)."""
        url = url.rstrip("/") if url else None
        return [p for p in self.peers.values() if p.node == node or (p.node is None and p.url == url)]

    async def _notify_all(self) -> None:
        # including peers whose key we have not learned yet: one that was in sync from the start
        # only ever answered 204, and it needs the news as much as any
        peers = [p for p in self.peers.values() if p.node != self._own.public_key and p.failures < DEAD_AFTER_FAILURES]
        digest = await self.digest()

        async def one(peer: PeerState) -> None:
            try:
                await self._post(peer, "/v1/peer/notify", {"digest": digest})
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass  # the peer's own anti-entropy round is the backstop

        await asyncio.gather(*(one(p) for p in peers))

    def add_peer(self, url: str, source: str) -> None:
        url = url.rstrip("/")
        if url in self.peers or url == self.own_url or len(self.peers) >= self._peer_count_max:
            return
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return
        # a peer we were told about waits for its turn at random; one we found or that called us is tried now
        self.peers[url] = PeerState(url, source, urgent=source != "exchanged")
        self._wake.set()

    def admitted(self, origin: bytes) -> bool:
        return self.open_membership or origin in self._book.nodes

    def heard_from(self, node: bytes, advertised: str | None) -> None:
        """An admitted node made a signed request to us: it is alive, whatever we thought.

        A restarted peer is tried again at once instead of at the end of its backoff.
        """
        if advertised:
            self.add_peer(advertised, "contacted")
        for peer in self._peers_of(node, advertised):
            if peer.failures and not peer.penalties:
                peer.failures, peer.next_try_ms, peer.urgent = 0, 0, True
                self._wake.set()

    def _drop_dead(self) -> None:
        """Peers that failed DROP_AFTER_FAILURES times in a row leave the table, unless configured."""
        for url, peer in list(self.peers.items()):
            if peer.source != "static" and peer.failures >= DROP_AFTER_FAILURES:
                logger.info("dropping peer %s after %d failures: %s", url, peer.failures, peer.last_error)
                del self.peers[url]

    async def _loop(self) -> None:
        """Sync with peers as they fall due, without waiting for one another.

        Which peers, and when:
        - **urgent** ones at once: a new peer, one that sent a notification (it has
          news), one that called us after failing;
        - failing ones when their backoff ends;
        - and every `interval_ms`, GOSSIP_FANOUT healthy peers picked at random:
          anti-entropy, the backstop for a lost notification. So the cluster's
          background cost is O(N) round trips per interval, not O(N²), and news
          travels by push (notify, then the receivers relay).
        A slow or dead peer holds one of the CONCURRENT_PEERS slots, never the others.
        """
        sem = asyncio.Semaphore(CONCURRENT_PEERS)
        running: dict[str, asyncio.Task] = {}
        notifying: asyncio.Task | None = None
        next_round_ms = 0

        async def one(peer: PeerState, mine: str) -> None:
            try:
                async with sem:
                    await self._sync(peer, mine)
            finally:
                running.pop(peer.url, None)
                self._wake.set()

        try:
            while True:
                self._wake.clear()
                self._drop_dead()
                if self._push and (notifying is None or notifying.done()):
                    self._push = False
                    notifying = asyncio.create_task(self._notify_all())
                    notifying.add_done_callback(lambda _t: self._wake.set())
                now = self._clock.now_ms()
                idle = [p for p in list(self.peers.values())
                        if p.url not in running and p.node != self._own.public_key]
                due = [p for p in idle if p.next_try_ms <= now and (p.urgent or p.failures)]
                if now >= next_round_ms and not self._fetching:  # catching up: no frontiers on the side
                    healthy = [p for p in idle if p.next_try_ms <= now and not p.urgent and not p.failures]
                    due += self._rng.sample(healthy, min(GOSSIP_FANOUT, len(healthy)))
                    next_round_ms = now + self._interval_ms
                if due:
                    mine = await self.digest()
                    for peer in due:
                        running[peer.url] = asyncio.create_task(one(peer, mine))
                waits = [next_round_ms - now, *(p.next_try_ms - now for p in idle if p.failures or p.urgent)]
                try:
                    await asyncio.wait_for(self._wake.wait(), max(min(waits), 5) / 1000)
                except asyncio.TimeoutError:
                    pass
        finally:
            for task in [*running.values(), *([notifying] if notifying else [])]:
                task.cancel()
            await asyncio.gather(*running.values(), *([notifying] if notifying else []), return_exceptions=True)

    # -- HTTP -----------------------------------------------------------------------------------

    def _headers(self, method: str, path_qs: str, body: bytes) -> dict[str, str]:
        return peer_headers(method, path_qs, body, self._clock.now_ms(), self._own.public_key, self._own.seed,
                            self._nonce(NONCE_BYTES), self.own_url, v1_compat=self.v1_compat)

    async def _get(self, peer: PeerState, path_qs: str, limit: int = FRONTIER_BYTES_MAX, cbor: bool = False) -> Any:
        assert self._transport is not None
        headers = self._headers("GET", path_qs, b"")
        if cbor:
            headers["Accept"] = "application/cbor"
        status, body = await self._transport.request("GET", peer.url + path_qs, headers, b"", limit)
        if body is None:
            raise PeerProtocolError("oversized", f"{path_qs.split('?')[0]} answer over {limit} bytes")
        if status == 204:
            return None  # in sync: nothing to say
        if status != 200:
            raise RuntimeError(f"{path_qs.split('?')[0]}: HTTP {status} {body[:200]!r}")
        try:
            # a peer's CBOR is untrusted like an agent's: bounded before it is built (PROTOCOL.md §2)
            return encoding.decode(body, items_max=self._entries_max + 16) if cbor else json.loads(body)
        except Exception:
            raise PeerProtocolError("bad_encoding", f"{path_qs.split('?')[0]} answer does not decode") from None

    async def _post(self, peer: PeerState, path: str, doc: dict[str, Any]) -> int:
        assert self._transport is not None
        body = json.dumps(doc).encode()
        headers = {"Content-Type": "application/json", **self._headers("POST", path, body)}
        status, _ = await self._transport.request("POST", peer.url + path, headers, body, 64 * 1024)
        return status

    # -- one peer ---------------------------------------------------------------------------------

    async def _sync(self, peer: PeerState, mine: str) -> None:
        now = self._clock.now_ms()
        try:
            doc = await self._get(peer, f"/v1/peer/frontier?digest={mine}")
            if doc is None:  # 204: the peer holds exactly what we hold
                peer.last_contact_ms = now
                peer.lag_events = peer.peer_lag_events = peer.peer_lag_bytes = 0
                peer.failures, peer.last_error, peer.next_try_ms, peer.urgent = 0, None, now, False
                return
            node, origins, exchanged, forks = self._parse_frontier(doc)
            if node == self._own.public_key:
                peer.node = node  # ourselves under another address: never contacted again
                peer.next_try_ms = 2**62
                return
            peer.node = node
            peer.last_contact_ms = now
            for url in exchanged:
                self.add_peer(url, "exchanged")
            await self._learn_forks(peer, forks, now)
            known = await self._db.read(self._known, [o for o, _s, _n in origins])
            peer.lag_events = self._lag(origins, known)
            for origin, size, note in origins:
                await self._sync_origin(peer, origin, size, note, known)
            await self._measure_peer_lag(peer, origins)
            peer.failures, peer.last_error, peer.next_try_ms, peer.urgent = 0, None, now, False
        except PeerProtocolError as e:
            peer.penalties += 1
            peer.last_error = f"{e.code}: {e.message}"
            peer.next_try_ms, peer.urgent = now + PENALTY_BACKOFF_MS, False
            logger.warning("peer %s penalised: %s", peer.url, peer.last_error)
            if e.code == "fork" and e.evidence:
                await self._db.write(peer_store.record_fork, bytes.fromhex(e.evidence["origin"]), now,
                                     peer.url, e.evidence)
                self.poke()  # tell every peer: they learn the fork from our frontier
        except Exception as e:  # never let one peer stop the loop
            if not isinstance(e, (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError, OSError)):
                logger.exception("replication with %s failed unexpectedly", peer.url)
            peer.failures += 1
            peer.last_error = f"{type(e).__name__}: {e}"[:300]
            backoff = min(BACKOFF_MS_MAX, self._interval_ms * 2 ** min(peer.failures, 8))
            peer.next_try_ms, peer.urgent = now + int(backoff * (0.5 + self._rng.random() / 2)), False

    def _parse_frontier(self, doc: Any) -> tuple[bytes, list[tuple[bytes, int, str]], list[str], list[Any]]:
        try:
            node = bytes.fromhex(doc["node"])
            raw_origins = doc["origins"]
            peers = doc.get("peers", [])
            if len(node) != 32 or not isinstance(raw_origins, list) or len(raw_origins) > FRONTIER_ORIGINS_MAX:
                raise ValueError("shape")
            origins = []
            for o in raw_origins:
                key = bytes.fromhex(o["origin"])
                size, note = o["size"], o["checkpoint"]
                if len(key) != 32 or type(size) is not int or size < 0 or not isinstance(note, str):
                    raise ValueError("origin entry")
                origins.append((key, size, note))
            exchanged = [u for u in peers[:PEERS_EXCHANGED_MAX] if isinstance(u, str) and len(u) < 300]
            forks = doc.get("forks", [])
            if not isinstance(forks, list) or len(forks) > FORKS_EXCHANGED_MAX:
                raise ValueError("forks")
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise PeerProtocolError("bad_frontier", f"frontier does not parse: {e}") from None
        return node, origins, exchanged, forks

    async def _learn_forks(self, peer: PeerState, untrusted: list[Any], now: int) -> None:
        """Fork evidence relayed by a peer: each record is checked here, never taken on trust."""
        if not untrusted:
            return
        known = await self._db.read(lambda c: set(peer_store.forked_origins(c)))
        for evidence in untrusted:
            origin = bytes.fromhex(evidence["origin"]) if isinstance(evidence, dict) and isinstance(
                evidence.get("origin"), str) and len(evidence["origin"]) == 64 else None
            if origin is not None and origin in known:
                continue
            origin, _a, _b = check_fork_evidence(evidence)  # raises bad_evidence: the peer is penalised
            if await self._db.write(peer_store.record_fork, origin, now, f"{peer.url} (relayed)", evidence):
                logger.warning("origin %s forked (evidence relayed by %s); no longer merged", origin.hex(), peer.url)
                known.add(origin)
                self.poke()

    @staticmethod
    def _known(conn: Connection, origins: list[bytes]) -> tuple[set[bytes], dict[bytes, tuple[int, int, str | None]]]:
        """One read for a whole frontier: the forked origins, and what we hold of each origin."""
        held = {}
        for origin in origins:
            row = peer_store.held(conn, origin)
            if row is not None:
                held[origin] = row
        return set(peer_store.forked_origins(conn)), held

    async def _sync_origin(self, peer: PeerState, origin: bytes, size: int, untrusted_note: str,
                           known: tuple[set[bytes], dict[bytes, tuple[int, int, str | None]]]) -> None:
        """Bring one origin up to the peer's signed checkpoint."""
        forks, held_by_origin = known
        held = held_by_origin.get(origin)
        if origin == self._own.public_key:
            if untrusted_note != self._own.checkpoint_note:
                await self._check_own(origin, untrusted_note)
            return
        if not self.admitted(origin) or origin in forks:
            return
        if held is not None and held[2] == untrusted_note:
            return  # the very checkpoint we hold: nothing to check, nothing to fetch
        cp = self._checkpoint(untrusted_note, origin)
        if cp.size != size:
            raise PeerProtocolError("bad_frontier", "frontier size differs from its checkpoint")
        if cp.size == 0:
            return  # an empty log: nothing to fetch, nothing to be consistent with
        held_size = held[1] if held else 0
        held_note = held[2] if held else None
        held_cp = self._checkpoint(held_note, origin) if held_note else None
        if cp.size <= held_size:
            # an older (or equal) checkpoint than the entries we hold: its root must be our tree's
            # at that size — we store every size's hashes — or the origin signed two histories
            keep = held_cp is None or cp.size > held_cp.size
            # read-only unless the note is newer than ours (we hold entries past our last note)
            await (self._db.write if keep else self._db.read)(self._adopt_note, origin, cp, untrusted_note, keep,
                                                                held_note)
            if keep:
                self._changes += 1  # a newer note is held: the digest covers it
            return
        if held_cp is not None and held_cp.size > 0:
            proof = await self._proof(peer, origin, held_cp.size, cp.size)
            check_consistent(held_cp, held_note, cp, untrusted_note, proof)
        if held_size < cp.size:
            async with self._origin_lock(origin):  # one fetch per origin at a time, whichever peer serves it
                held = await self._db.read(peer_store.held, origin)
                start = held[1] if held else 0
                if start < cp.size:
                    self._fetching += 1
                    try:
                        await self._fetch(peer, origin, start, cp, untrusted_note)
                    finally:
                        self._fetching -= 1
                        if self._fetching == 0 and self._relay:
                            # one notification when the catch-up is done, not one per origin fetched
                            self._relay = False
                            self.poke()
        if origin == peer.node:
            await self._cosign(peer, cp)

    async def _check_own(self, origin: bytes, untrusted_note: str) -> None:
        """A peer's copy of our own log must be a prefix of our log.

        If it is not, this key signed two histories: the node was restored from an
        old backup, or its key is in two places. Either way the key is burnt: the
        evidence is stored and gossiped, and the node stops extending its log.
        """
        cp = self._checkpoint(untrusted_note, origin)
        own = self._own
        if cp.size == 0 or cp.size > own.checkpoint_size:
            if cp.size > own.checkpoint_size and cp.size != self._warned_own_size:
                self._warned_own_size = cp.size  # once per size, not once per sync
                logger.critical("a peer holds %d entries of this node's log, which has %d: restored from an old"
                                " backup? the key will be flagged forked as soon as the log grows past %d",
                                cp.size, own.checkpoint_size, cp.size)
            return
        try:
            await self._db.read(self._adopt_note, origin, cp, untrusted_note, False, own.checkpoint_note)
        except PeerProtocolError as e:
            if e.code != "fork":
                raise
            await self._db.write(peer_store.record_fork, origin, self._clock.now_ms(), "self", e.evidence)
            own.read_only_reason = ("this node's key signed two different logs (fork evidence in GET /v1/forks);"
                                    " start the node with a new key")
            logger.critical("%s", own.read_only_reason)
            self.poke()

    def _origin_lock(self, origin: bytes) -> asyncio.Lock:
        lock = self._locks.get(origin)
        if lock is None:
            lock = self._locks[origin] = asyncio.Lock()
        return lock

    def _adopt_note(self, conn: Connection, origin: bytes, cp: Checkpoint, note: str, keep: bool,
                    held_note: str | None) -> None:
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
            log_store.store_checkpoint(conn, row[0], cp.size, cp.root, note, self._clock.now_ms())

    async def _proof(self, peer: PeerState, origin: bytes, first: int, second: int) -> list[bytes]:
        doc = await self._get(peer, f"/v1/log/proof/consistency?origin={origin.hex()}&from={first}&to={second}", 64 * 1024)
        try:
            return [bytes.fromhex(h) for h in doc["proof"]][:64]
        except (KeyError, TypeError, ValueError):
            raise PeerProtocolError("bad_proof", "consistency proof does not parse") from None

    async def _fetch(self, peer: PeerState, origin: bytes, start: int, cp: Checkpoint, note: str) -> None:
        """Fetch [start, cp.size) page by page; each page verified against the signed root, then stored.

        The next page is fetched while this one is verified, and verified (in a worker process,
        node/workers.py) while the previous one is stored (at most three pages in memory), so the
        network, the signature checks and the writer overlap. A page is stored only after the
        one before it was; a failed store stops the fetch before the next.
        """
        origin_id = await self._db.write(lambda c: log_store.ensure_origin(c, origin)[0])
        frontier = await self._db.read(merkle_store.load_frontier, origin_id, start)
        ahead = asyncio.create_task(self._page(peer, origin, start, cp))
        storing: asyncio.Task | None = None
        try:
            while start < cp.size:
                raw, proof = await ahead
                end = start + len(raw)
                if end < cp.size:
                    ahead = asyncio.create_task(self._page(peer, origin, end, cp))
                checked = await self._verify_page(origin, frontier, start, raw, cp, note, proof)
                if storing is not None:
                    await storing
                    if self.on_store is not None:
                        self.on_store()
                storing = asyncio.create_task(
                    self._db.write(self._store, origin_id, checked, note if end == cp.size else None))
                frontier = checked.frontier  # the range's frontier: the one _store appends to
                start = end
            if storing is not None:
                await storing
                if self.on_store is not None:
                    self.on_store()
        finally:
            if not ahead.done():
                await cancel_and_wait(ahead)
            elif not ahead.cancelled():
                ahead.exception()  # a prefetch that failed after ours did: retrieved, not raised
            if storing is not None:
                # a verified page being written runs to its end (the writer thread would anyway):
                # the next fetch of this origin then starts from what it committed
                await asyncio.wait([storing])
                if not storing.cancelled():
                    storing.exception()
        self._changes += 1  # our digest changed
        self._relay = True  # relay: our peers may not reach the origin's holders directly

    async def _page(self, peer: PeerState, origin: bytes, start: int, cp: Checkpoint) -> tuple[list[bytes], list[bytes] | None]:
        """Entries [start, ...) of origin from the peer, at most replication_entries_max, and, for a
        page that ends before cp.size, the consistency proof from its end to cp.size."""
        end = min(cp.size, start + self._entries_max)
        doc = await self._get(peer, f"/v1/log/entries?origin={origin.hex()}&start={start}&end={end}",
                              self._entries_max * 8 * 1024, cbor=True)
        raw = doc.get("entries") if isinstance(doc, dict) else None
        if not isinstance(raw, list) or not all(type(e) is bytes for e in raw):
            raise PeerProtocolError("bad_entry", "entries are not a list of byte strings")
        if not raw or len(raw) > end - start:
            raise PeerProtocolError("bad_range", f"asked {end - start} entries, got {len(raw)}")
        end = start + len(raw)
        return raw, (await self._proof(peer, origin, end, cp.size) if end < cp.size else None)

    async def _verify_page(self, origin: bytes, frontier: Frontier, start: int, raw: list[bytes], cp: Checkpoint,
                           note: str, proof: list[bytes] | None) -> Any:
        """Signatures and hashes of a page, off the event loop. A page that ends before cp.size
        must be consistent with the signed root (proof); the last one must give it exactly."""
        end = start + len(raw)
        page_cp = cp
        if proof is not None:
            work = frontier.copy()
            for r in raw:
                work.append(leaf_hash(r))
            if not verify_consistency(end, cp.size, work.root(), cp.root, proof):
                raise PeerProtocolError("bad_root", f"entries {start}..{end} are not a prefix of the signed log")
            page_cp = Checkpoint(cp.origin, end, work.root())
        if self.workers is not None and self.workers.worth(len(raw)):  # node/workers.py: another process
            return await self.workers.verify_range(origin, frontier, start, raw, page_cp, note)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(None, verify_range, origin, frontier, start, raw, page_cp, note)

    def _store(self, conn: Connection, origin_id: int, checked: Any, note: str | None) -> Frontier:
        """Writer thread: the verified range, its budget effects and (at the end) the origin's note."""
        now = self._clock.now_ms()
        try:
            return self._store_page(conn, origin_id, checked, note, now)
        except Exception:
            # the page rolled back after the book counted it: rebuild the book from the log, or stop
            why = self._book.rollback(conn, now)
            if why is not None:
                self._own.read_only_reason = self._own.read_only_reason or why
                logger.critical("%s", why)
            raise

    def _store_page(self, conn: Connection, origin_id: int, checked: Any, note: str | None, now: int) -> Frontier:
        envelopes = list(checked.envelopes)
        held = log_store.find_entries(conn, [e.event.id for e in envelopes])
        deltas: dict = {}
        seen: set[bytes] = set()
        for env in envelopes:
            if env.event.id in held or env.event.id in seen:
                continue  # counted once, whichever origins carry it
            seen.add(env.event.id)
            # a metered event counts only if its origin or a configured meter signed it (PROTOCOL.md §6)
            for key, amount in self._book.observe(conn, env.event, now, origin=checked.origin).items():
                deltas[key] = deltas.get(key, 0) + amount
        frontier = merkle_store.load_frontier(conn, origin_id, checked.start)
        new_frontier, _ = log_store.append_batch(
            conn, origin_id, frontier, envelopes, now, (lambda size, root: note) if note else None,
            also=lambda c: budget_store.add_counters(c, deltas),
        )
        return new_frontier

    async def _cosign(self, peer: PeerState, cp: Checkpoint) -> None:
        sig = cosign(cp, self._own.origin_line, self._own.seed, self._clock.now_ms() // 1000)
        try:
            status = await self._post(peer, "/v1/peer/cosign", {"size": cp.size, "line": sig.line()})
            if status >= 300:
                logger.info("peer %s refused our cosignature: HTTP %s", peer.url, status)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            logger.info("cosignature to %s not delivered: %s", peer.url, e)

    def _lag(self, origins: list[tuple[bytes, int, str]],
             known: tuple[set[bytes], dict[bytes, tuple[int, int, str | None]]]) -> int:
        """Events the peer holds (of origins merged here: admitted, not forked) that we do not."""
        forks, held = known
        return sum(max(0, size - (held[o][1] if o in held else 0)) for o, size, _n in origins
                   if o != self._own.public_key and self.admitted(o) and o not in forks)

    async def _measure_peer_lag(self, peer: PeerState, origins: list[tuple[bytes, int, str]]) -> None:
        theirs = {o: s for o, s, _n in origins}

        def run(conn: Connection) -> tuple[int, int]:
            events = nbytes = 0
            for origin, size, _note in peer_store.frontier(conn, FRONTIER_ORIGINS_MAX):
                if not self.admitted(origin) and origin != self._own.public_key:
                    continue
                have = theirs.get(origin, 0)
                if size > have:
                    row = log_store.origin_row(conn, origin)
                    events += size - have
                    nbytes += peer_store.bytes_from(conn, row[0], have) if row else 0
            return events, nbytes

        peer.peer_lag_events, peer.peer_lag_bytes = await self._db.read(run)
        peer.origins = {o.hex(): s for o, s in theirs.items()}

    # -- anchoring ---------------------------------------------------------------------------

    async def anchor_if_new(self) -> None:
        """After a cosignature arrives: if a larger checkpoint is now anchored, send it to the sink."""
        if self.witness_quorum < 1:
            return
        found = await self._db.read(peer_store.anchored, self._own.origin_id, self.witness_quorum)
        if found is None or found[0] <= self._anchored_size:
            return
        size, note, lines = found
        self._anchored_size = size
        text = note + "".join(line + "\n" for line in lines)
        if not self._anchor_sink:
            return
        try:
            if self._anchor_sink.startswith(("http://", "https://")):
                assert self._session is not None
                async with self._session.post(self._anchor_sink, data=text.encode(),
                                              headers={"Content-Type": "text/plain"}) as resp:
                    await resp.read()
            else:
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, _append, self._anchor_sink, text + "\n")
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            logger.warning("anchor sink %s failed: %s", self._anchor_sink, e)

    # -- serving peers ---------------------------------------------------------------------------

    async def frontier_answer(self, their_digest: str | None) -> dict[str, Any] | None:
        """GET /v1/peer/frontier: None when the asker's digest is ours (in sync), else the frontier:
        every origin held (size, signed checkpoint), known peers and fork evidence."""

        def run(conn: Connection) -> dict[str, Any] | None:
            origins, forked = digest_state(conn)
            digest = cluster_digest(origins, forked)
            if their_digest == digest:
                return None
            evidence = [f["evidence"] for f in peer_store.forks(conn) if "a" in f["evidence"]]
            return {
                "node": self._own.public_key.hex(),
                "origins": [{"origin": o.hex(), "size": s, "checkpoint": n} for o, s, n in origins],
                "digest": digest,
                "forks": evidence[:FORKS_EXCHANGED_MAX],
            }

        doc = await self._db.read(run)
        if doc is not None:
            doc["peers"] = self.known_urls()
        return doc

    async def accept_cosignature(self, witness: bytes, size: int, line: str) -> None:
        """POST /v1/peer/cosign: a witness's cosignature of our checkpoint at size, checked, stored."""
        sig = NoteSignature.parse_line(line.rstrip("\n"))
        own = self._own

        def note_at(conn: Connection) -> str:
            cp = log_store.checkpoint_at(conn, own.origin_id, size)
            if cp is None:
                raise NotFound("not_found", f"no checkpoint of this node at size {size}")
            return cp.note

        note = await self._db.read(note_at)
        cp, _ = open_checkpoint(note, own.public_key)
        verify_cosignature(cp, sig, origin_line(witness), witness)
        await self._db.write(peer_store.add_cosignature, own.origin_id, size, witness, sig.line().rstrip("\n"),
                             self._clock.now_ms())
        await self.anchor_if_new()

    # -- reads ---------------------------------------------------------------------------------

    def peers_view(self) -> list[dict[str, Any]]:
        now = self._clock.now_ms()
        others = [p for p in self.peers.values() if p.node != self._own.public_key]
        return [p.view(now) for p in sorted(others, key=lambda p: p.url)]

    def seen_sizes(self) -> dict[str, int]:
        """Per origin (hex), the largest size any peer's last full frontier showed."""
        seen: dict[str, int] = {}
        for p in self.peers.values():
            for origin, size in p.origins.items():
                seen[origin] = max(seen.get(origin, 0), size)
        return seen

    def known_urls(self) -> list[str]:
        live = [p.url for p in self.peers.values()
                if p.failures < DEAD_AFTER_FAILURES and p.node != self._own.public_key]
        return live[:PEERS_EXCHANGED_MAX]


def _append(path: str, text: str) -> None:
    with open(path, "a") as f:
        f.write(text)
        f.flush()


def digest_state(conn: Connection) -> tuple[list[tuple[bytes, int, str]], list[bytes]]:
    """What the cluster digest covers: every origin held (size, note), and the forked origins."""
    return peer_store.frontier(conn, FRONTIER_ORIGINS_MAX), peer_store.forked_origins(conn)


def cluster_digest(origins: list[tuple[bytes, int, str]], forked: Iterable[bytes] = ()) -> str:
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
