"""Parse and verify in worker processes: batches of submissions and pages fetched from peers.

Theory of operation. The node is one front process (aiohttp, the committer and
its single writer thread, replication) and a pool of worker processes that do
the CPU-heavy pure work: the canonical CBOR parse and the Ed25519 check of a
batch (`POST /v1/events/batch`, CBOR) or of a page of entries fetched from a
peer (`consensus.verify.verify_range`). Python runs one thread of Python at a
time per process, so before this the event loop's parsing, the verify threads
and the writer took turns on one interpreter lock; now the front process only
splits bytes, rebuilds the already-checked envelopes (`trusted_envelope`, a C
CBOR decode: a third of the full parse) and writes.

Only what pays the hop goes to a worker: a batch (hundreds of envelopes per
round trip) or a page. A single event is parsed and verified in the front
process as before (one round trip to a worker costs more than its parse).

Workers are started with the `spawn` method (a fresh interpreter: forking a
process that runs SQLite and thread pools is unsafe, and a fork server would
be one more process of ~27 MB) from the event loop's thread, each with
PR_SET_PDEATHSIG: if the node is killed (even SIGKILL) the kernel kills its
workers, so none outlives the node. They hold no state,
no file of the data directory and no socket: a worker's death loses nothing
acknowledged (the pool is rebuilt and the request answered with 503
`not_ready`; replication retries the page).
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import hashlib
import logging
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Sequence

import cbor2

from ledger import errors as ledger_errors
from ledger.errors import LedgerError, NotReady
from ledger.events import KINDS, Envelope, Event, parse_envelope
from ledger.signing import verify

logger = logging.getLogger("ats.workers")

PR_SET_PDEATHSIG = 1
# What a worker is worth sending: fewer envelopes than this are parsed in the front process.
BATCH_MIN = 8


# -- in the worker --------------------------------------------------------------------------


def _die_with_parent(node_pid: int) -> None:
    """Worker initializer: the kernel kills this process when the node (its parent) dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the pool's pipes still end the worker
        pass
    # The node died before prctl took effect: nobody would kill us. Its pid may still answer
    # os.kill(pid, 0) as an unreaped zombie, so ask who our parent is now: once the node is dead,
    # we were handed to init (or a subreaper).
    if os.getppid() != node_pid:
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the node, which stops the pool


def _error(e: LedgerError) -> tuple[str, str, str, Any]:
    return (type(e).__name__, e.code, e.message, getattr(e, "details", None))


def _rebuild_error(t: tuple[str, str, str, Any]) -> LedgerError:
    cls = getattr(ledger_errors, t[0], LedgerError)
    if not (isinstance(cls, type) and issubclass(cls, LedgerError)) or cls is ledger_errors.InvariantViolation:
        cls = LedgerError
    return cls(t[1], t[2], details=t[3]) if t[3] else cls(t[1], t[2])


def check_items(raws: Sequence[bytes]) -> list[Any]:
    """Worker: parse and verify each envelope; None for a good one, else its error as a tuple."""
    out: list[Any] = []
    for raw in raws:
        try:
            env = parse_envelope(raw)
            verify(env.event.raw, env.sig, env.event.signer)
            out.append(None)
        except LedgerError as e:
            out.append(_error(e))
    return out


def check_range(origin: bytes, frontier: Any, start: int, raw: Sequence[bytes], cp: Any, note: str) -> Any:
    """Worker: `consensus.verify.verify_range` without the parsed envelopes (the front rebuilds them)."""
    from consensus.verify import PeerProtocolError, verify_range

    try:
        checked = verify_range(origin, frontier, start, raw, cp, note)
    except PeerProtocolError as e:
        return ("error", e.code, str(e))
    return dataclasses.replace(checked, envelopes=())


def _ping() -> int:
    return os.getpid()


# -- in the front process ----------------------------------------------------------------------


def trusted_envelope(raw: bytes) -> Envelope:
    """The Envelope of bytes a worker already parsed and checked (canonical, schema, signature).

    Decodes with cbor2's C decoder and skips the canonical-form checks; the body's field
    checks still run (they also normalise lists to tuples), so the result equals
    `parse_envelope(raw)` for every envelope `parse_envelope` accepts.
    """
    m = cbor2.loads(raw)
    er = m["event"]
    e = cbor2.loads(er)
    kind = e["kind"]
    checks = _CHECKS.get(kind)
    if checks is None:
        if kind not in KINDS:  # a newer node's kind (replication stores it, counts it nowhere)
            return parse_envelope(raw, unknown_kinds=True)
        cls = KINDS[kind]
        checks = _CHECKS[kind] = (cls, tuple((f.name, f.metadata["check"]) for f in dataclasses.fields(cls)))
    b = e["body"]
    # Body.from_map without its dataclasses.fields() walk: the same checks (they normalise values)
    body = checks[0](**{name: check(name, b[name]) for name, check in checks[1] if name in b})
    return Envelope(Event(kind=e["kind"], signer=e["signer"], ts=e["ts"], nonce=e["nonce"], body=body, raw=er,
                          id=hashlib.sha256(er).digest()), m["sig"], raw)


_CHECKS: dict[str, tuple[type, tuple[tuple[str, Any], ...]]] = {}


class WorkerPool:
    """The worker processes of one node; `None`-safe: with 0 processes every call runs in threads."""

    def __init__(self, processes: int):
        self.processes = processes
        self._pool: ProcessPoolExecutor | None = None
        self.ready = False

    async def start(self) -> None:
        """Start the workers from the event loop's thread (PR_SET_PDEATHSIG is tied to the thread
        that starts a process: this one lives as long as the node); the loop serves meanwhile,
        and batches are checked in this process until the workers answer."""
        if self.processes <= 0:
            return
        ctx = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(self.processes, mp_context=ctx, initializer=_die_with_parent,
                                   initargs=(os.getpid(),))
        loop = asyncio.get_running_loop()
        try:
            # one task per worker, submitted together: each submit starts one more process (a
            # fork and exec, ~ms; the imports run in the new process)
            futures = [loop.run_in_executor(pool, _ping) for _ in range(self.processes)]
            await asyncio.wait_for(asyncio.gather(*futures), 60)
        except Exception as e:  # no workers (no /dev/shm, a sandbox): the node runs as before
            logger.warning("worker processes unavailable, verifying in threads: %s", e)
            pool.shutdown(wait=False, cancel_futures=True)
            return
        self._pool, self.ready = pool, True

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.ready = False

    def worth(self, count: int) -> bool:
        """Send this many envelopes to a worker?"""
        return self.ready and count >= BATCH_MIN

    async def _run(self, fn: Any, *args: Any) -> Any:
        pool = self._pool
        if pool is None:
            raise NotReady("not_ready", "the node's worker processes stopped")
        try:
            return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)
        except BrokenProcessPool:
            if self._pool is pool:
                self._restart()
            raise NotReady("not_ready", "a worker process died; retry") from None

    def _restart(self) -> None:
        logger.error("a worker process died; starting new ones")
        old, self._pool, self.ready = self._pool, None, False
        if old is not None:
            old.shutdown(wait=False, cancel_futures=True)
        asyncio.get_running_loop().create_task(self.start())

    async def check_batch(self, raws: list[bytes]) -> list[Envelope | LedgerError]:
        """Parse and verify envelopes in the workers (split over them); each is an Envelope whose
        signature verified, or its error."""
        n = max(1, min(self.processes, len(raws) // BATCH_MIN))
        size = -(-len(raws) // n)
        parts = await asyncio.gather(*(self._run(check_items, raws[i : i + size]) for i in range(0, len(raws), size)))
        out: list[Envelope | LedgerError] = []
        for part, start in zip(parts, range(0, len(raws), size)):
            for raw, err in zip(raws[start : start + size], part):
                out.append(trusted_envelope(raw) if err is None else _rebuild_error(err))
        return out

    async def verify_range(self, origin: bytes, frontier: Any, start: int, raw: list[bytes], cp: Any, note: str) -> Any:
        """`consensus.verify.verify_range` in a worker; raises its PeerProtocolError."""
        from consensus.verify import PeerProtocolError

        checked = await self._run(check_range, origin, frontier, start, raw, cp, note)
        if isinstance(checked, tuple):
            raise PeerProtocolError(checked[1], checked[2])
        return dataclasses.replace(checked, envelopes=tuple(trusted_envelope(r) for r in raw))
