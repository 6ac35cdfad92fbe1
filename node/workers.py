"""Parse and verify in worker processes: submissions (batches and single events) and pages fetched from peers.

Theory of operation. The node is one front process (aiohttp, the committer and
its single writer thread, replication) and a few worker processes that do the
CPU-heavy pure work: the canonical CBOR parse and the Ed25519 check of
submitted envelopes (`POST /v1/events/batch` and `POST /v1/events`, CBOR) and
of pages of entries fetched from a peer (`consensus.verify.verify_range`).
Python runs one thread of Python at a time per process, so without them the
event loop's parsing, the checks and the writer take turns on one interpreter
lock; with them the front process only splits bytes, rebuilds the
already-checked envelopes (`trusted_envelope`, a C CBOR decode: a sixth of the
full parse) and writes.

    clients ──HTTP──▶ front process (one port, one data dir)            workers (--verify-processes)
                      event loop: HTTP, fair queue, committer  ──pipe──▶ worker 1: parse + verify
                      writer thread: SQLite, one txn per commit ◀─pipe── worker 2: ...
                      reader threads

Each worker is a plain child process (`python -c ...serve()`, no multiprocessing:
no fork server, no resource tracker, no feeder or manager thread in the front
process), talking over its stdin and stdout: a message is a 4-byte big-endian
length and a pickle, `(function name, arguments)` one way, `(ok, result)` the
other. A worker holds at most one message at a time; what arrives meanwhile
waits in the pool's queue, and single envelopes that waited together go to
the next free worker as one message. So one event costs one round trip when
the node is idle, and under load the round trips are shared (a few
microseconds each, against ~100 µs of parse and verify per event).

Workers hold no state, no file of the data directory and no socket. Each one
asks the kernel to kill it when the node dies (PR_SET_PDEATHSIG, even on
SIGKILL) and exits at the end of its stdin (the node closes it at shutdown), so
none outlives the node; a worker's death loses nothing acknowledged (its
requests are answered 503 `not_ready`, replication retries the page, and a new
worker takes its place).
"""

from __future__ import annotations

import asyncio
import collections
import ctypes
import dataclasses
import hashlib
import logging
import os
import pickle
import signal
import sys
from typing import Any, Sequence

import cbor2

from ledger import errors as ledger_errors
from ledger.errors import LedgerError, NotReady
from ledger.events import KINDS, Envelope, Event, parse_envelope
from ledger.signing import verify

logger = logging.getLogger("ats.workers")

PR_SET_PDEATHSIG = 1
# What a worker is worth sending from a batch: fewer envelopes than this are parsed in the front process.
BATCH_MIN = 8
# Most single envelopes that waited together sent to a worker as one message.
COALESCE_MAX = 256
# The start of a worker: its imports, ~0.2 s (at most this long: then the node runs without).
START_TIMEOUT_S = 60.0
_HEAD = 4


# -- in the worker --------------------------------------------------------------------------


def _die_with_parent(node_pid: int) -> None:
    """The kernel kills this process when the node (its parent) dies."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the end of stdin still ends the worker
        pass
    # The node died before prctl took effect: nobody would kill us. Its pid may still answer
    # os.kill(pid, 0) as an unreaped zombie, so ask who our parent is now: once the node is dead,
    # we were handed to init (or a subreaper).
    if os.getppid() != node_pid:
        os._exit(0)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the node, which stops its workers


def _read_exact(fd: int, n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = os.read(fd, n - got)
        if not chunk:
            return b""
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


def serve(node_pid: int) -> None:
    """A worker's main loop: answer messages on stdin until it ends (the node closed it or died)."""
    _die_with_parent(node_pid)
    inp, out = 0, os.dup(1)
    os.dup2(2, 1)  # a stray print goes to the log, never into the answers
    while True:
        head = _read_exact(inp, _HEAD)
        if not head:
            return
        msg = _read_exact(inp, int.from_bytes(head, "big"))
        if not msg:
            return
        name, args = pickle.loads(msg)
        try:
            answer = (True, _FUNCTIONS[name](*args))
        except Exception as e:  # our own bug: the front process logs it and answers 503
            answer = (False, f"{type(e).__name__}: {e}")
        data = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        view = memoryview(len(data).to_bytes(_HEAD, "big") + data)
        while view:
            view = view[os.write(out, view):]


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


def _ping() -> int:
    return os.getpid()


_FUNCTIONS = {"check_items": check_items, "check_range": check_range, "ping": _ping}

# A batch is sent in parts of at most this many envelopes (~10 ms of a worker): a single event
# waits for at most one part before a worker takes it.
BATCH_PART = 64
_WORKER_CODE = "import sys; from node.workers import serve; serve(int(sys.argv[1]))"


class _Job:
    __slots__ = ("name", "args", "future")

    def __init__(self, name: str, args: tuple, future: asyncio.Future):
        self.name, self.args, self.future = name, args, future


class _Worker:
    """One worker process and what it is working on (one message at a time)."""

    def __init__(self, proc: asyncio.subprocess.Process):
        self.proc = proc
        self.jobs: list[_Job] | None = None  # in flight; None: idle
        self.reader: asyncio.Task | None = None

    def send(self, jobs: list[_Job], name: str, args: tuple) -> None:
        data = pickle.dumps((name, args), protocol=pickle.HIGHEST_PROTOCOL)
        self.jobs = jobs
        assert self.proc.stdin is not None
        self.proc.stdin.write(len(data).to_bytes(_HEAD, "big") + data)

    async def receive(self) -> tuple[bool, Any]:
        assert self.proc.stdout is not None
        head = await self.proc.stdout.readexactly(_HEAD)
        return pickle.loads(await self.proc.stdout.readexactly(int.from_bytes(head, "big")))


class WorkerPool:
    """The worker processes of one node; with 0 processes (or none started) every check runs in the
    front process, as the callers' fallback."""

    def __init__(self, processes: int):
        self.processes = processes
        self.ready = False
        self._workers: list[_Worker] = []
        self._singles: collections.deque[_Job] = collections.deque()  # served first
        self._queue: collections.deque[_Job] = collections.deque()
        self._closing = False
        self._spawning: set[asyncio.Task] = set()

    @property
    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    async def start(self) -> None:
        """Start the workers from the event loop's thread (PR_SET_PDEATHSIG is tied to the thread
        that starts a process: this one lives as long as the node); the loop serves meanwhile,
        and envelopes are checked in this process until the workers answer."""
        if self.processes <= 0:
            return
        results = await asyncio.gather(*(self._spawn() for _ in range(self.processes)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        if errors and not self._workers:  # no workers (a sandbox, no fork): the node runs as before
            logger.warning("worker processes unavailable, verifying in this process: %s", errors[0])
        self.ready = bool(self._workers)

    async def _spawn(self, attempts: int = 3) -> None:
        """Start one worker and wait for its first answer; one that dies while it starts (killed,
        out of memory) is started again, at most `attempts` times in all."""
        for attempt in range(attempts):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", _WORKER_CODE, str(os.getpid()),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE)
            worker = _Worker(proc)
            try:
                worker.send([], "ping", ())
                ok, _pid = await asyncio.wait_for(worker.receive(), START_TIMEOUT_S)
                assert ok, _pid
                break
            except (asyncio.IncompleteReadError, ConnectionError) as e:
                _kill(proc)
                if attempt == attempts - 1:
                    raise
                logger.warning("a worker process died while it started (%s); starting another", e)
            except BaseException:
                _kill(proc)
                raise
        if self._closing:
            _kill(proc)
            return
        worker.jobs = None
        worker.reader = asyncio.get_running_loop().create_task(self._read(worker), name="ats-worker-reader")
        self._workers.append(worker)
        self.ready = True
        self._dispatch()

    async def _read(self, worker: _Worker) -> None:
        """Answers of one worker, in order; its death fails what it held and starts another."""
        try:
            while True:
                ok, result = await worker.receive()
                jobs, worker.jobs = worker.jobs or [], None
                if not ok:
                    logger.error("a worker process failed: %s", result)
                    _fail(jobs, NotReady("not_ready", "a worker process failed; retry"))
                elif len(jobs) == 1:
                    if not jobs[0].future.done():
                        jobs[0].future.set_result(result)
                else:  # single envelopes sent together: one answer each
                    i = 0
                    for job in jobs:
                        n = len(job.args[0])
                        if not job.future.done():
                            job.future.set_result(result[i : i + n])
                        i += n
                self._dispatch()
        except (asyncio.IncompleteReadError, ConnectionError, EOFError, pickle.UnpicklingError):
            pass
        if worker in self._workers:
            self._workers.remove(worker)
        _fail(worker.jobs or [], NotReady("not_ready", "a worker process died; retry"))
        worker.jobs = None
        _kill(worker.proc)
        if self._closing:
            return
        logger.error("a worker process died (exit %s); starting another", worker.proc.returncode)
        self.ready = bool(self._workers)
        task = asyncio.get_running_loop().create_task(self._replace())
        self._spawning.add(task)
        task.add_done_callback(self._spawning.discard)

    async def _replace(self) -> None:
        try:
            await self._spawn()
        except Exception as e:
            logger.error("cannot start a worker process: %s", e)
            if not self._workers:
                self.ready = False
                _fail(list(self._singles) + list(self._queue), NotReady("not_ready", "no worker process; retry"))
                self._singles.clear()
                self._queue.clear()

    def _dispatch(self) -> None:
        """Give every idle worker the next message: single envelopes first (those waiting
        together as one message), then batch parts and pages."""
        for worker in self._workers:
            if worker.jobs is not None:
                continue
            if self._singles:
                jobs = [self._singles.popleft()]
                count = len(jobs[0].args[0])
                while self._singles and count + len(self._singles[0].args[0]) <= COALESCE_MAX:
                    jobs.append(self._singles.popleft())
                    count += len(jobs[-1].args[0])
                raws = jobs[0].args[0] if len(jobs) == 1 else [r for job in jobs for r in job.args[0]]
                worker.send(jobs, "check_items", (raws,))
            elif self._queue:
                job = self._queue.popleft()
                worker.send([job], job.name, job.args)
            else:
                return

    def _submit(self, name: str, args: tuple, single: bool = False) -> asyncio.Future:
        if not self._workers:
            raise NotReady("not_ready", "the node's worker processes stopped; retry")
        future = asyncio.get_running_loop().create_future()
        (self._singles if single else self._queue).append(_Job(name, args, future))
        self._dispatch()
        return future

    async def aclose(self) -> None:
        """Stop the workers: the end of their stdin ends them; killed if one takes over 5 s."""
        self._closing = True
        self.ready = False
        for task in list(self._spawning):
            task.cancel()
        workers, self._workers = self._workers, []
        for w in workers:
            if w.proc.stdin is not None:
                w.proc.stdin.close()
        for w in workers:
            try:
                await asyncio.wait_for(w.proc.wait(), 5)
            except asyncio.TimeoutError:
                _kill(w.proc)
            if w.reader is not None:
                w.reader.cancel()
        _fail([j for w in workers for j in (w.jobs or [])] + list(self._singles) + list(self._queue),
              NotReady("not_ready", "node is shutting down"))
        self._singles.clear()
        self._queue.clear()

    def close(self) -> None:
        """Stop the workers at once (no event loop needed)."""
        self._closing = True
        self.ready = False
        for w in self._workers:
            _kill(w.proc)
        self._workers = []

    def worth(self, count: int) -> bool:
        """Send a batch of this many envelopes to the workers?"""
        return self.ready and count >= BATCH_MIN

    async def check_one(self, raw: bytes) -> Envelope:
        """Parse and verify one envelope in a worker: the Envelope, or raises its LedgerError."""
        (err,) = await self._submit("check_items", ([raw],), single=True)
        if err is not None:
            raise _rebuild_error(err)
        return trusted_envelope(raw)

    async def check_batch(self, raws: list[bytes]) -> list[Envelope | LedgerError]:
        """Parse and verify envelopes in the workers (in parts, spread over them); each is an
        Envelope whose signature verified, or its error."""
        parts = await asyncio.gather(*(self._submit("check_items", (raws[i : i + BATCH_PART],))
                                       for i in range(0, len(raws), BATCH_PART)))
        errs = [e for part in parts for e in part]
        return [trusted_envelope(raw) if err is None else _rebuild_error(err) for raw, err in zip(raws, errs)]

    async def verify_range(self, origin: bytes, frontier: Any, start: int, raw: list[bytes], cp: Any, note: str) -> Any:
        """`consensus.verify.verify_range` in a worker; raises its PeerProtocolError."""
        from consensus.verify import PeerProtocolError

        checked = await self._submit("check_range", (origin, frontier, start, raw, cp, note))
        if isinstance(checked, tuple):
            raise PeerProtocolError(checked[1], checked[2])
        return dataclasses.replace(checked, envelopes=tuple(trusted_envelope(r) for r in raw))


def _fail(jobs: Sequence[_Job], error: LedgerError) -> None:
    for job in jobs:
        if not job.future.done():
            job.future.set_exception(error)


def _kill(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
