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

Layout. Every decision above (which peer when, the peer state table, what to do with each
origin, backoff, penalties, lag, merge, witness and anchor policy) is made by the pure engine in
`consensus/replication.py`; the peer messages are decoded and bounded by `consensus/peermsg/`.
This module is the shell: it runs what the engine decides (HTTP requests, SQLite reads and
writes, asyncio tasks, the page pipeline) and feeds the results back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any, Callable
from urllib.parse import urlsplit

import aiohttp

from consensus.messages import FRONTIER_BYTES_MAX, PEERS_EXCHANGED_MAX
from consensus.peermsg import frontier as msg_frontier
from consensus.replication import (
    CONCURRENT_PEERS, Held, OriginPlan, PeerState, ReplicationEngine, anchor_due,
)
from consensus.replication import OwnLog as EngineOwnLog
from consensus.replication import cluster_digest  # noqa: F401  (node.queries, tests/sim/harness.py)
from consensus.verify import (
    PeerProtocolError, check_consistent, check_fork_evidence, prefix_checkpoint, verify_range,
)
from ledger.checkpoint import Checkpoint, NoteSignature, cosign, open_checkpoint, origin_line, verify_cosignature
from ledger.merkle import Frontier
from node.aio import cancel_and_wait
from node.budgets import BudgetBook
from node import tls
from node.clock import SystemClock
from node.ingest import OwnLog
from node import replstore
from node.peerclient import HttpTransport, Transport  # noqa: F401  (Transport: tests/sim/simnet.py)
from node.peerclient import PeerClient, send_anchor
from node.replstore import digest_state  # noqa: F401  (node.queries, tests/sim/harness.py)
from node.store import logs as log_store
from node.store import merkle as merkle_store
from node.store import peers as peer_store
from node.store.sqlite import Connection, Database

logger = logging.getLogger("ats.replication")

REQUEST_TIMEOUT_S = 10
PEER_KEEPALIVE_S = 5.0


class Replicator:
    def __init__(self, db: Database, own: OwnLog, book: BudgetBook, clock: SystemClock, *, static_peers: tuple[str, ...],
                 open_membership: bool, interval_ms: int, entries_max: int, peer_count_max: int, witness_quorum: int,
                 anchor_sink: str, transport: Transport | None = None, rng: random.Random | None = None,
                 ssl: Any = None, nonce: Callable[[int], bytes] = os.urandom):
        self._db, self._own, self._book, self._clock = db, own, book, clock
        self.open_membership = open_membership
        self._interval_ms, self._entries_max = interval_ms, entries_max
        self.witness_quorum, self._anchor_sink = witness_quorum, anchor_sink
        self.engine = ReplicationEngine(own.public_key, interval_ms=interval_ms, peer_count_max=peer_count_max,
                                        rng=rng or random.Random(), admitted=self.admitted,
                                        static_peers=static_peers)
        self.peers = self.engine.peers  # url -> PeerState (consensus/replication.py)
        self._wake = asyncio.Event()
        self._session: aiohttp.ClientSession | None = None
        self._task: asyncio.Task | None = None
        # peer requests, signed with a fresh nonce each (consensus.messages)
        self._client = PeerClient(lambda: (clock.now_ms(), own.public_key, own.seed, self.own_url, self.v1_compat),
                                  nonce, entries_max)
        self._client.transport = transport
        self._anchored_size = -1
        self._locks: dict[bytes, asyncio.Lock] = {}
        self._fetching = 0  # origin fetches in progress
        self._relay = False  # fetched entries not yet announced to our peers
        self._warned_own_size = 0  # a peer's larger copy of our own log, already logged
        self._changes = 0  # bumped by every store (poke): the cached digest is stale
        self._digest: tuple[int, str] | None = None
        self._push = False
        self.on_store: Callable[[], None] | None = None  # after each page of a peer's entries is stored
        self.unknown_kinds = 0  # events of kinds this release does not know, stored (docs/replication.md)
        self.v1_compat = False  # also sign as ats-peer/v1 for 0.1 nodes (peer_protocol_v1, consensus/messages.py)
        self.ssl = ssl  # how peers' certificates are verified (node/tls.py client_ssl); None: system CAs
        self.workers: Any = None  # node/workers.py WorkerPool: pages are verified in another process

    @property
    def own_url(self) -> str | None:
        """Advertised to peers, so a node we contact can contact us."""
        return self.engine.own_url

    @own_url.setter
    def own_url(self, url: str | None) -> None:
        self.engine.own_url = url

    # -- lifecycle --------------------------------------------------------------------------

    async def context(self) -> Any:
        """An aiohttp cleanup context: the replication loop lives between startup and cleanup."""
        # idle connections are dropped before a peer's http_head_timeout_ms (10 s by default) closes them
        self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S),
                                              connector=tls.connector(self.ssl, keepalive_timeout=PEER_KEEPALIVE_S))
        if self._client.transport is None:
            self._client.transport = HttpTransport(self._session)
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

    def wake(self, node: bytes | None = None, url: str | None = None) -> None:
        """A peer told us it has news: pull from it now instead of at the next interval.

        Only that peer is made due, so a notification costs one frontier round trip,
        not one to every peer (which made a push O(N²) requests across a cluster).
        """
        if node is not None:
            self.engine.wake(node, url, self._clock.now_ms())
        self._wake.set()

    async def _notify_all(self) -> None:
        targets = self.engine.notify_targets()
        if not targets:  # no peer to tell: no digest to compute (a read after every commit)
            return
        digest = await self.digest()

        async def one(peer: PeerState) -> None:
            try:
                await self._client.post(peer, "/v1/peer/notify", {"digest": digest})
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
                pass  # the peer's own anti-entropy round is the backstop

        await asyncio.gather(*(one(p) for p in targets))

    def add_peer(self, url: str, source: str) -> None:
        parts = urlsplit(url.rstrip("/"))
        if self.engine.add_peer(url, source, valid=parts.scheme in ("http", "https") and bool(parts.hostname)):
            self._wake.set()

    def admitted(self, origin: bytes) -> bool:
        return self.open_membership or origin in self._book.nodes

    def heard_from(self, node: bytes, advertised: str | None) -> None:
        """An admitted node made a signed request to us: it is alive, whatever we thought.

        A restarted peer is tried again at once instead of at the end of its backoff.
        """
        if advertised:
            self.add_peer(advertised, "contacted")
        if self.engine.heard_from(node, advertised, self._clock.now_ms()):
            self._wake.set()

    async def _loop(self) -> None:
        """Sync with peers as they fall due (`ReplicationEngine.due`), without waiting for one
        another. A slow or dead peer holds one of the CONCURRENT_PEERS slots, never the others."""
        sem = asyncio.Semaphore(CONCURRENT_PEERS)
        running: dict[str, asyncio.Task] = {}
        notifying: asyncio.Task | None = None

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
                for peer in self.engine.drop_dead():
                    logger.info("dropping peer %s after %d failures: %s", peer.url, peer.failures, peer.last_error)
                if self._push and (notifying is None or notifying.done()):
                    self._push = False
                    notifying = asyncio.create_task(self._notify_all())
                    notifying.add_done_callback(lambda _t: self._wake.set())
                now = self._clock.now_ms()
                due = self.engine.due(now, running, bool(self._fetching))
                if due:
                    mine = await self.digest()
                    for peer in due:
                        running[peer.url] = asyncio.create_task(one(peer, mine))
                try:
                    await asyncio.wait_for(self._wake.wait(), self.engine.wait_ms(now, running, bool(self._fetching)) / 1000)
                except asyncio.TimeoutError:
                    pass
        finally:
            for task in [*running.values(), *([notifying] if notifying else [])]:
                task.cancel()
            await asyncio.gather(*running.values(), *([notifying] if notifying else []), return_exceptions=True)

    # -- one peer ---------------------------------------------------------------------------------

    async def _sync(self, peer: PeerState, mine: str) -> None:
        now = self._clock.now_ms()
        try:
            body = await self._client.get(peer, f"/v1/peer/frontier?digest={mine}", FRONTIER_BYTES_MAX)
            if body is None:  # 204: the peer holds exactly what we hold
                self.engine.record(peer, "in_sync", now)
                return
            frontier = msg_frontier.decode(body)
            peer.node = frontier.node
            if frontier.node == self._own.public_key:
                self.engine.record(peer, "self", now)
                return
            peer.last_contact_ms = now
            for url in frontier.peers:
                self.add_peer(url, "exchanged")
            await self._learn_forks(peer, list(frontier.forks), now)
            origins = list(frontier.origins)
            forks, held = await self._db.read(replstore.known, [o for o, _s, _n in origins])
            peer.lag_events = self.engine.lag(origins, forks, held)
            for origin, size, note in origins:
                await self._sync_origin(peer, origin, size, note, forks, held)
            await self._measure_peer_lag(peer, origins)
            self.engine.record(peer, "synced", now)
        except PeerProtocolError as e:
            self.engine.record(peer, "penalised", now, f"{e.code}: {e.message}")
            logger.warning("peer %s penalised: %s", peer.url, peer.last_error)
            if e.code == "fork" and e.evidence:
                await self._db.write(peer_store.record_fork, bytes.fromhex(e.evidence["origin"]), now,
                                     peer.url, e.evidence)
                self.poke()  # tell every peer: they learn the fork from our frontier
        except Exception as e:  # never let one peer stop the loop
            if not isinstance(e, (aiohttp.ClientError, asyncio.TimeoutError, RuntimeError, OSError)):
                logger.exception("replication with %s failed unexpectedly", peer.url)
            self.engine.record(peer, "failed", now, f"{type(e).__name__}: {e}")

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

    def _own_state(self) -> EngineOwnLog:
        own = self._own
        return EngineOwnLog(own.public_key, own.checkpoint_size, own.checkpoint_note)

    async def _sync_origin(self, peer: PeerState, origin: bytes, size: int, untrusted_note: str,
                           forks: set[bytes], held: dict[bytes, Held]) -> None:
        """Bring one origin up to the peer's signed checkpoint: run the engine's plan."""
        plan = self.engine.plan_origin(peer.node, origin, size, untrusted_note, held.get(origin), forks,
                                       self._own_state())
        if plan.action == "own_ahead":
            if plan.cp.size != self._warned_own_size:
                self._warned_own_size = plan.cp.size  # once per size, not once per sync
                logger.critical("a peer holds %d entries of this node's log, which has %d: restored from an old"
                                " backup? the key will be flagged forked as soon as the log grows past %d",
                                plan.cp.size, self._own.checkpoint_size, plan.cp.size)
        elif plan.action == "check_own":
            await self._check_own(plan)
        elif plan.action == "adopt":
            # read-only unless the note is newer than ours (we hold entries past our last note)
            await (self._db.write if plan.keep else self._db.read)(replstore.adopt_note, origin, plan.cp, plan.note,
                                                                   plan.keep, plan.held_note, self._clock.now_ms())
            if plan.keep:
                self._changes += 1  # a newer note is held: the digest covers it
        elif plan.action == "fetch":
            await self._run_fetch(peer, plan)

    async def _run_fetch(self, peer: PeerState, plan: OriginPlan) -> None:
        cp, origin = plan.cp, plan.origin
        assert cp is not None
        if plan.held_cp is not None:
            proof = await self._client.proof(peer, origin, plan.held_cp.size, cp.size)
            check_consistent(plan.held_cp, plan.held_note, cp, plan.note, proof)
        async with self._origin_lock(origin):  # one fetch per origin at a time, whichever peer serves it
            held = await self._db.read(peer_store.held, origin)
            start = held[1] if held else 0
            if start < cp.size:
                self._fetching += 1
                try:
                    await self._fetch(peer, origin, start, cp, plan.note)
                finally:
                    self._fetching -= 1
                    if self._fetching == 0 and self._relay:
                        # one notification when the catch-up is done, not one per origin fetched
                        self._relay = False
                        self.poke()
        if plan.cosign:
            await self._cosign(peer, cp)

    async def _check_own(self, plan: OriginPlan) -> None:
        """A peer's copy of our own log must be a prefix of our log; if not, the key is burnt:
        the evidence is stored and gossiped, and the node stops extending its log."""
        own = self._own
        try:
            await self._db.read(replstore.adopt_note, plan.origin, plan.cp, plan.note, False, own.checkpoint_note, 0)
        except PeerProtocolError as e:
            if e.code != "fork":
                raise
            await self._db.write(peer_store.record_fork, plan.origin, self._clock.now_ms(), "self", e.evidence)
            own.read_only_reason = ("this node's key signed two different logs (fork evidence in GET /v1/forks);"
                                    " start the node with a new key")
            logger.critical("%s", own.read_only_reason)
            self.poke()

    def _origin_lock(self, origin: bytes) -> asyncio.Lock:
        lock = self._locks.get(origin)
        if lock is None:
            lock = self._locks[origin] = asyncio.Lock()
        return lock

    async def _fetch(self, peer: PeerState, origin: bytes, start: int, cp: Checkpoint, note: str) -> None:
        """Fetch [start, cp.size) page by page; each page verified against the signed root, then stored.

        The next page is fetched while this one is verified, and verified (in a worker process,
        node/workers.py) while the previous one is stored (at most three pages in memory), so the
        network, the signature checks and the writer overlap. A page is stored only after the
        one before it was; a failed store stops the fetch before the next.
        """
        origin_id = await self._db.write(lambda c: log_store.ensure_origin(c, origin)[0])
        frontier = await self._db.read(merkle_store.load_frontier, origin_id, start)
        ahead = asyncio.create_task(self._client.page(peer, origin, start, cp.size))
        storing: asyncio.Task | None = None
        try:
            while start < cp.size:
                raw, proof = await ahead
                end = start + len(raw)
                if end < cp.size:
                    ahead = asyncio.create_task(self._client.page(peer, origin, end, cp.size))
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

    async def _verify_page(self, origin: bytes, frontier: Frontier, start: int, raw: list[bytes], cp: Checkpoint,
                           note: str, proof: list[bytes] | None) -> Any:
        """Signatures and hashes of a page, off the event loop. A page that ends before cp.size
        must be consistent with the signed root (proof); the last one must give it exactly."""
        page_cp = cp if proof is None else prefix_checkpoint(frontier, start, raw, cp, proof)
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
        new_frontier, unknown = replstore.store_page(conn, self._book, origin_id, checked, note, now)
        if unknown:  # stored and relayed, counted nowhere (docs/replication.md "Unknown kinds")
            self.unknown_kinds += len(unknown)
            logger.warning("stored %d event(s) of kinds this release does not know (%s) from origin %s: relayed,"
                           " counted nowhere; upgrade this node", len(unknown),
                           ", ".join(sorted({e.event.kind for e in unknown})), checked.origin.hex()[:16])
        return new_frontier

    async def _cosign(self, peer: PeerState, cp: Checkpoint) -> None:
        sig = cosign(cp, self._own.origin_line, self._own.seed, self._clock.now_ms() // 1000)
        try:
            status = await self._client.post(peer, "/v1/peer/cosign", {"size": cp.size, "line": sig.line()})
            if status >= 300:
                logger.info("peer %s refused our cosignature: HTTP %s", peer.url, status)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as e:
            logger.info("cosignature to %s not delivered: %s", peer.url, e)

    async def _measure_peer_lag(self, peer: PeerState, origins: list[tuple[bytes, int, str]]) -> None:
        theirs = {o: s for o, s, _n in origins}
        merged = lambda o: self.admitted(o) or o == self._own.public_key  # noqa: E731
        peer.peer_lag_events, peer.peer_lag_bytes = await self._db.read(replstore.peer_lag, theirs, merged)
        peer.origins = {o.hex(): s for o, s in theirs.items()}

    # -- anchoring ---------------------------------------------------------------------------

    async def anchor_if_new(self) -> None:
        """After a cosignature arrives: if a larger checkpoint is now anchored, send it to the sink."""
        if self.witness_quorum < 1:
            return
        found = await self._db.read(peer_store.anchored, self._own.origin_id, self.witness_quorum)
        if found is None or not anchor_due(self.witness_quorum, found[0], self._anchored_size):
            return
        size, note, lines = found
        self._anchored_size = size
        text = note + "".join(line + "\n" for line in lines)
        if self._anchor_sink:
            await send_anchor(self._session, self._anchor_sink, text)

    # -- serving peers ---------------------------------------------------------------------------

    async def frontier_answer(self, their_digest: str | None) -> dict[str, Any] | None:
        """GET /v1/peer/frontier: None when the asker's digest is ours (in sync), else the frontier:
        every origin held (size, signed checkpoint), known peers and fork evidence."""
        doc = await self._db.read(replstore.frontier_doc, self._own.public_key, their_digest)
        if doc is not None:
            doc["peers"] = self.known_urls()
        return doc

    async def accept_cosignature(self, witness: bytes, size: int, line: str) -> None:
        """POST /v1/peer/cosign: a witness's cosignature of our checkpoint at size, checked, stored."""
        sig = NoteSignature.parse_line(line.rstrip("\n"))
        own = self._own
        note = await self._db.read(replstore.own_note_at, own.origin_id, size)
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

    def metric_lines(self) -> list[str]:
        """/metrics: events of kinds this release does not know, stored since start (node/metrics.py extra)."""
        name = "ats_replication_unknown_kind_events_total"
        return [f"# HELP {name} Events of kinds this release does not know, stored by replication since start"
                " (stored and relayed, counted nowhere; docs/replication.md).", f"# TYPE {name} counter",
                f"{name} {self.unknown_kinds}"]

    def seen_sizes(self) -> dict[str, int]:
        """Per origin (hex), the largest size any peer's last full frontier showed."""
        seen: dict[str, int] = {}
        for p in self.peers.values():
            for origin, size in p.origins.items():
                seen[origin] = max(seen.get(origin, 0), size)
        return seen

    def known_urls(self) -> list[str]:
        return self.engine.known_urls(PEERS_EXCHANGED_MAX)
