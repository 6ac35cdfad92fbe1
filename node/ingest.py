"""The submit use case: verify → one group-commit transaction → receipts.

Theory of operation. A request's envelopes are parsed by the API layer, then
`Ingestor.submit` checks signatures (off the event loop, in a thread pool:
pynacl releases the GIL, so this uses every core) and hands the survivors to
the `Committer`. The committer is the only producer of writes: it takes every
queued envelope (up to `checkpoint_events_max`, lingering at most
`checkpoint_ms_max` for more), and in one writer-thread call looks up which ids
are already held (→ `duplicate`, with the stored receipt), applies the clock
rule to the rest, appends the new ones with their tree hashes and a signed
checkpoint in one `BEGIN IMMEDIATE` transaction, and only after COMMIT
resolves the waiting requests. So an acknowledged event is durable, and many
concurrent submitters share one transaction and one fsync.

Duplicates are looked up before the clock rule so that a client retrying an
old, already accepted event gets its receipt rather than `stale_timestamp`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from ledger.admission import check_timestamp
from ledger.errors import InvariantViolation, LedgerError, NotReady
from ledger.constants import NONCE_SIZE
from ledger.events import Envelope, make_envelope_bytes, make_event_bytes, parse_envelope
from ledger.merkle import Frontier
from ledger.signing import sign, verify
from node.clock import SystemClock
from node.fairqueue import FairQueue, Pacer
from node.metrics import NodeMetrics
from node import receipts
from node.budgets import Admitted, BudgetBook
from node.store import budgets as budget_store
from node.store import meter as meter_store
from node.store import logs as log_store
from node.store.sqlite import Connection, Database, StorageError

from node.ownlog import OwnLog  # noqa: F401  (re-exported: OwnLog was defined here)

logger = logging.getLogger("ats.ingest")

VERIFY_CHUNK = 64
# A request this small is verified on the loop (~60 µs per signature) rather than queued behind
# other clients' large batches in the verify pool: a single event never waits for a big batch.
VERIFY_INLINE_MAX = 2


@dataclass
class Outcome:
    """Per-envelope result: a receipt dict, or an error."""

    receipt: dict[str, Any] | None = None
    error: LedgerError | None = None

    @property
    def status(self) -> str:
        return self.receipt["status"] if self.receipt else self.error.code  # type: ignore[union-attr]


def receipt(event_id: bytes, status: str, origin: bytes, index: int, budgets: Any = None,
            run: dict[str, Any] | None = None) -> dict[str, Any]:
    """The contract's receipt (PROTOCOL.md §5); `run` is added for run records."""
    r = {"id": event_id.hex(), "status": status, "origin": origin.hex(), "index": index, "budgets": budgets or []}
    if run is not None:
        r["run"] = run
    return r


def stored_receipt(stored: log_store.StoredEntry, status: str = "duplicate") -> dict[str, Any]:
    """The receipt an event got when it was accepted, with the given status."""
    extra = receipts.unpack(stored.budgets)
    return receipt(stored.event_id, status, stored.origin, stored.index, **extra)


@dataclass
class _Pending:
    envelopes: list[Any]  # Envelope, or OwnRecord (built on the writer thread)
    future: asyncio.Future

    def __len__(self) -> int:
        return len(self.envelopes)


@dataclass(frozen=True)
class OwnRecord:
    """An event this node signs itself (a metered event), built on the writer thread at commit time so
    that its ts and its price (`body(book, ts_ms)`) come from the same moment and policy."""

    kind: str
    body: Callable[[BudgetBook, int], dict[str, Any]]
    nonce: bytes


# The fair queue's client for the events this node signs itself (metered events): never a remote address.
OWN_CLIENT = "@node"


class Committer:
    """Owns the writer: batches pending envelopes into one transaction and checkpoint each."""

    def __init__(self, db: Database, own: OwnLog, clock: SystemClock, metrics: NodeMetrics, *,
                 events_max: int, linger_ms: int, skew_ms: int, book: BudgetBook | None = None,
                 on_alerts: Callable[[list[dict[str, Any]]], None] | None = None,
                 on_commit: Callable[[], None] | None = None, nonce: Callable[[int], bytes] = os.urandom,
                 anomalies: Any = None, rights_wait_ms: int = 0, rights_retry_ms: int = 100,
                 share_events: int = 0, pace_gap_ms: int = 0, bulk_min_pct: int = 10):
        self._rights_wait_ms, self._rights_retry_ms = rights_wait_ms, max(1, rights_retry_ms)
        self._anomalies = anomalies  # node.anomaly.AnomalyWatch: fed each admitted event, on this thread
        self._db, self._own, self._clock, self._metrics = db, own, clock, metrics
        self._nonce = nonce  # node records' nonces (a seeded source in tests/sim)
        self._book, self._on_alerts, self._on_commit = book, on_alerts, on_commit
        self._events_max, self._linger_ms, self._skew_ms = events_max, linger_ms, skew_ms
        # one client's events in one commit (node.fairqueue); 0: as many as a commit holds
        self._share_events = min(share_events or events_max, events_max)
        self._queue: FairQueue[_Pending] = FairQueue()
        self._pacer = Pacer(pace_gap_ms / 1000, bulk_min_pct / 100) if pace_gap_ms > 0 else None
        # a request is queued in chunks of a share, or smaller ones the pacer can fit into gaps
        self._chunk = max(1, self._share_events // 4) if self._pacer is not None else self._share_events
        self._task: asyncio.Task | None = None
        self.write_error: LedgerError | None = None  # the last commit's storage error, until one succeeds

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="ats-committer")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        for p in self._queue.drain():
            if not p.future.done():
                p.future.set_exception(NotReady("not_ready", "node is shutting down"))

    async def record(self, records: list[OwnRecord]) -> list[Outcome]:
        """Sign and commit events of this node's own (metered events); one outcome each."""
        if self._own.read_only_reason:
            raise NotReady("read_only", f"node is read-only: {self._own.read_only_reason}")
        return await self._enqueue(list(records), OWN_CLIENT)  # one commit: never split

    async def submit(self, envelopes: list[Envelope], client: str = "") -> list[Outcome]:
        """Commit envelopes (signatures already checked); returns one outcome each.

        client names the submitter (its remote address) for the fair queue.
        """
        if self._own.read_only_reason:
            raise NotReady("read_only", f"node is read-only: {self._own.read_only_reason}")
        outcomes = await self._commit_all(envelopes, client)
        if self._rights_wait_ms > 0:
            await self._wait_for_rights(envelopes, outcomes, client)
        return outcomes

    def _enqueue(self, chunk: list[Envelope], client: str) -> asyncio.Future:
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        if self._pacer is not None and not self._queue.queued(client):
            self._pacer.arrived(client, loop.time())
        self._queue.put(client, _Pending(chunk, fut))
        return fut

    async def _wait_for_rights(self, envelopes: list[Envelope], outcomes: list[Outcome], client: str) -> None:
        """Strict budgets: an event refused for want of rights is held, not refused, while the node
        asks its peers (the refusal itself started the asking), and tried again every retry
        interval; only if no rights arrive within rights_wait_ms does it get its 429 no_rights."""
        deadline = self._clock.monotonic_s() + self._rights_wait_ms / 1000
        while True:
            waiting = [i for i, o in enumerate(outcomes) if o.error is not None and o.error.code == "no_rights"]
            if not waiting or self._clock.monotonic_s() >= deadline:
                return
            await asyncio.sleep(self._rights_retry_ms / 1000)
            again = await self._commit_all([envelopes[i] for i in waiting], client)
            for i, outcome in zip(waiting, again):
                outcomes[i] = outcome

    async def _commit_all(self, envelopes: list[Envelope], client: str) -> list[Outcome]:
        """Queue envelopes in chunks (`_chunk`) under client; wait for every chunk's commit."""
        step = self._chunk
        if len(envelopes) <= step:  # one chunk (every single event): its future, without a gather
            return await self._enqueue(envelopes, client)
        futures = [self._enqueue(envelopes[start : start + step], client) for start in range(0, len(envelopes), step)]
        parts = await asyncio.gather(*futures, return_exceptions=True)  # every chunk settles before we answer
        for part in parts:
            if isinstance(part, BaseException):
                raise part
        return [o for part in parts for o in part]  # type: ignore[union-attr]

    async def _run(self) -> None:
        try:
            await self._serve()
        except asyncio.CancelledError:
            raise
        except BaseException as e:  # our own bug: say so where /healthz and writers see it, never hang
            self._own.read_only_reason = f"the writer stopped: {type(e).__name__}: {e}"
            logger.critical("%s", self._own.read_only_reason, exc_info=True)
            for p in self._queue.drain():
                if not p.future.done():
                    p.future.set_exception(NotReady("read_only", f"node is read-only: {self._own.read_only_reason}"))
            raise

    async def _serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._queue.wait()
            if self._linger_ms > 0:  # wait for more events to share this commit, at most linger_ms
                deadline = loop.time() + self._linger_ms / 1000
                while self._queue.events < self._events_max and loop.time() < deadline:
                    await asyncio.sleep(min(0.001, max(0.0, deadline - loop.time())))
            await self._commit_next(loop)

    async def _commit_next(self, loop: asyncio.AbstractEventLoop) -> None:
        """One commit, as the pacer plans it (node/fairqueue.py): light clients' events alone, or a
        bulk share that fits before a light client is expected back, or a short wait for it."""
        queue, share, pacer = self._queue, self._share_events, self._pacer
        light = queue.light_clients(share) if pacer is not None else []
        plan = pacer.plan(loop.time(), bool(light), share) if pacer is not None and queue.heavy(share) else None
        if plan is None:  # nobody has more than a share queued: round-robin, as many as a commit holds
            batch = queue.take(self._events_max, share)
        elif plan.action == "wait":
            await queue.wait_change(max(0.0, plan.until_s - loop.time()))
            return
        elif plan.action == "light":
            batch = queue.take(self._events_max, share, only=light)
        else:
            batch = queue.take(min(self._events_max, plan.events), min(share, plan.events))
        started = loop.time()
        await self._commit(batch)
        if pacer is not None:
            ended = loop.time()
            pacer.committed(sum(len(p) for p in batch), ended - started)
            pacer.served([c for c in light if not queue.queued(c)], ended)

    async def _commit(self, batch: list[_Pending]) -> None:
        envelopes = [env for p in batch for env in p.envelopes]
        now_ms = self._clock.now_ms()
        started = self._clock.monotonic_s()
        try:
            results, frontier, note, alerts = await self._db.write(self._write, envelopes, now_ms)
        except InvariantViolation as e:
            self._own.read_only_reason = str(e)
            logger.critical("invariant violated while committing; node is now read-only: %s", e)
            await self._unsign()
            self._fail(batch, e)
            return
        except Exception as e:
            # One batch's failure is that batch's alone: it rolled back (node/store/sqlite.py), the
            # superblock and the book are put back, and the writer goes on with the next batch.
            logger.error("commit failed, batch rolled back: %s: %s", type(e).__name__, e,
                         exc_info=not isinstance(e, StorageError))
            await self._unsign()
            await self._reload_quietly(now_ms)
            self.write_error = NotReady("storage_error", f"storage error, nothing was written: {e}"[:500])
            self._fail(batch, self.write_error)
            return
        except BaseException:
            self._fail(batch, NotReady("not_ready", "node is shutting down"))
            raise
        self.write_error = None
        appended = frontier.size - self._own.size
        if alerts and self._on_alerts:
            self._on_alerts(alerts)
        if appended:
            self._own.frontier = frontier
            self._own.checkpoint_note = note
            self._own.checkpoint_size = frontier.size
            self._metrics.batch_events.observe(appended)
            self._metrics.commit_seconds.observe(self._clock.monotonic_s() - started)
            self._metrics.checkpoints.inc()
            if self._on_commit:
                self._on_commit()
        i = 0
        for p in batch:
            n = len(p.envelopes)
            if not p.future.done():
                p.future.set_result(results[i : i + n])
            i += n

    async def _unsign(self) -> None:
        """A rolled-back batch may have recorded its checkpoint in the superblock: take it back.
        If that fails too, a restart would wrongly see a lost log, so the node turns read-only."""
        try:
            await self._db.write(lambda _conn: self._own.unsign())
        except OSError as e:
            self._own.read_only_reason = self._own.read_only_reason or f"cannot rewrite the superblock: {e}"
            logger.critical("%s", self._own.read_only_reason)

    async def _reload_quietly(self, now_ms: int) -> None:
        """After a rolled-back batch the book may hold its effects: rebuild it from the log.

        If even that fails (the disk is gone) the node cannot decide budgets any
        more: it turns read-only, with the reason, rather than guess.
        """
        if self._book is None:
            return
        try:
            await self._db.write(self._book.reload, now_ms)
        except Exception as e:
            self._own.read_only_reason = f"budget book could not be rebuilt after a failed commit: {e}"
            logger.critical("%s", self._own.read_only_reason)

    def _fail(self, batch: list[_Pending], error: LedgerError) -> None:
        for p in batch:
            if not p.future.done():
                p.future.set_exception(error)

    def _write(self, conn: Connection, envelopes: Sequence[Envelope], now_ms: int):
        """Writer thread: duplicates, clock rule, budgets, then one append transaction."""
        own, book = self._own, self._book
        envelopes = [self._node_record(e.kind, e.body(book, now_ms), now_ms, e.nonce) if isinstance(e, OwnRecord) else e
                     for e in envelopes]
        held = log_store.find_entries(conn, [env.event.id for env in envelopes])
        results: list[Outcome] = []
        new: list[Envelope] = []
        extras: list[bytes | None] = []
        new_ids: dict[bytes, dict[str, Any]] = {}
        batch = Admitted()
        none = Admitted()  # without a book: every event is admitted with no budgets
        size = own.size
        for env in envelopes:
            ev = env.event
            stored = held.get(ev.id)
            if stored is not None:
                results.append(Outcome(stored_receipt(stored)))
                continue
            if ev.id in new_ids:  # the same event twice in one batch
                results.append(Outcome({**new_ids[ev.id], "status": "duplicate"}))
                continue
            try:
                check_timestamp(ev.ts, now_ms, self._skew_ms)
                admitted, rejection = book.admit(conn, ev, now_ms) if book else (none, None)
            except LedgerError as e:
                results.append(Outcome(error=e))
                continue
            if admitted is not none:
                batch.merge(admitted)
            if rejection is not None:
                results.append(Outcome(error=rejection))
                continue
            if self._anomalies is not None:
                self._anomalies.observe(ev, now_ms, batch)
            # the receipt, built once: answered now, and its budgets stored for a duplicate's answer
            r = receipt(ev.id, "accepted", own.public_key, size + len(new), admitted.budgets, admitted.run or None)
            new_ids[ev.id] = r
            new.append(env)
            extras.append(receipts.pack(admitted.budgets, admitted.run) if admitted.budgets or admitted.run else None)
            results.append(Outcome(r))
        for kind, body in batch.node_records:
            new.append(self._node_record(kind, body, now_ms))
            extras.append(None)
        if not new:
            return results, own.frontier, own.checkpoint_note, []

        frontier, note, alerts = self._append(conn, new, extras, batch, now_ms)
        return results, frontier, note, alerts

    def _append(self, conn: Connection, new: list[Envelope], extras: list[bytes | None], batch: Admitted,
                now_ms: int) -> tuple[Frontier, str, list[dict[str, Any]]]:
        """Writer thread: one transaction appending the admitted events with the book's counters,
        settled calls and alerts; the superblock's flush overlaps its COMMIT."""
        own = self._own
        alert_ids: list[int] = []

        def also(c: Connection) -> None:
            budget_store.add_counters(c, batch.deltas)
            if batch.settled_calls:
                meter_store.delete_calls(c, batch.settled_calls)
            alert_ids.extend(budget_store.insert_alerts(c, batch.alerts))

        try:
            frontier, note = log_store.append_batch(
                conn, own.origin_id, own.frontier, new, now_ms, own.sign_overlapped, receipts=extras, also=also
            )
        except BaseException:
            try:
                own.synced()
            except InvariantViolation:
                pass  # the rolled-back batch's record is rewritten by OwnLog.unsign (Committer._commit)
            raise
        own.synced()  # the superblock's flush, which overlapped the COMMIT: durable before anything is served
        return frontier, note, [{**a, "id": i} for a, i in zip(batch.alerts, alert_ids)]

    def _node_record(self, kind: str, body: dict[str, Any], now_ms: int, nonce: bytes | None = None) -> Envelope:
        """An event signed by this node (suspensions, policy updates, system trust, metered events)."""
        raw = make_event_bytes(kind, self._own.public_key, now_ms, nonce or self._nonce(NONCE_SIZE), body)
        return parse_envelope(make_envelope_bytes(raw, sign(raw, self._own.seed)))


VERIFY_NICE = 10  # added to the verify threads' nice value


def _lower_priority() -> None:
    """Verify threads yield the CPU to the event loop and the writer (Linux: per-thread nice).

    They only run for batches (a request of one or two events is verified on the loop), so a
    client's bulk load is verified with the CPU that other clients' requests leave over, at no
    cost when the node has nothing else to do (issue 10, class 8).
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), os.getpriority(os.PRIO_PROCESS, 0) + VERIFY_NICE)
    except (AttributeError, OSError):
        pass  # not Linux, or not allowed: verify at the normal priority


class Ingestor:
    """Signature checks off the loop, then the committer."""

    def __init__(self, committer: Committer, metrics: NodeMetrics, clock: SystemClock, verify_threads: int):
        self._committer = committer
        self._metrics = metrics
        self._clock = clock
        threads = verify_threads or (os.cpu_count() or 1)
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="ats-verify", initializer=_lower_priority)
        self._threads = threads

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    @property
    def write_error(self) -> LedgerError | None:
        """The last commit's storage error, until a commit succeeds (for /healthz)."""
        return self._committer.write_error

    async def _verify(self, envelopes: Sequence[Envelope]) -> list[LedgerError | None]:
        def run(chunk: Sequence[Envelope]) -> list[LedgerError | None]:
            out: list[LedgerError | None] = []
            for env in chunk:
                try:
                    verify(env.event.raw, env.sig, env.event.signer)
                    out.append(None)
                except LedgerError as e:
                    out.append(e)
            return out

        if len(envelopes) <= VERIFY_INLINE_MAX:
            return run(envelopes)
        loop = asyncio.get_running_loop()
        size = max(1, min(VERIFY_CHUNK, -(-len(envelopes) // self._threads)))
        chunks = [envelopes[i : i + size] for i in range(0, len(envelopes), size)]
        parts = await asyncio.gather(*(loop.run_in_executor(self._pool, run, c) for c in chunks))
        return [e for part in parts for e in part]

    async def submit(self, items: Sequence[Envelope | LedgerError], client: str = "", *,
                     verified: bool = False) -> list[Outcome]:
        """Outcomes in order for parsed envelopes (or their parse errors); client: the submitter's
        address, for the committer's fair queue; `verified`: their signatures were already checked
        (by a worker process, node/workers.py)."""
        started = self._clock.monotonic_s()
        envelopes = [x for x in items if isinstance(x, Envelope)]
        sig_errors = [None] * len(envelopes) if verified else await self._verify(envelopes)
        self._metrics.verify_seconds.observe(self._clock.monotonic_s() - started)
        good = [env for env, err in zip(envelopes, sig_errors) if err is None]
        committed = iter(await self._committer.submit(good, client) if good else [])
        sig_iter = iter(sig_errors)
        outcomes = []
        for x in items:
            if isinstance(x, LedgerError):
                outcomes.append(Outcome(error=x))
                continue
            err = next(sig_iter)
            outcomes.append(Outcome(error=err) if err else next(committed))
        for o in outcomes:
            self._metrics.events.inc(1, o.status)
        self._metrics.submit_seconds.observe(self._clock.monotonic_s() - started)
        return outcomes
