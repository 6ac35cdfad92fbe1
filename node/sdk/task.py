"""The task meter for schedulers (`ats exec`, docs/gateway.md): reserve, run and measure a command, settle.

Theory of operation. `reserve()` asks the node to hold the task's estimate as one run of the
agent (`POST /v1/tasks`, with the agent's gateway token): a refusal means the command never
starts. `run()` starts the command and measures it as the kernel reports it:

- in a cgroup v2 of its own when one can be made (the first cgroup2 mount, writable: we are
  root, or delegated): CPU time from `cpu.stat` (every process of the task, even orphans),
  peak memory from `memory.peak` when the memory controller is on, parallel jobs from
  `cgroup.procs`, and `cgroup.kill` to stop the whole task. The command is started through
  `sh -c 'echo $$ > cgroup.procs; exec "$@"'`, so it is in the group before it runs a single
  instruction of its own, and without a fork hook in a threaded process;
- else from `wait4()` rusage (CPU time and peak RSS of the command and the descendants it
  reaped) and the process tree in /proc.

Bytes read and written are `rchar` and `wchar` of `/proc/<pid>/io` (every read and write
system call: files, pipes, sockets), read once the command has exited but before it is reaped
(`waitid(WNOWAIT)`), when they include every descendant it reaped. While the command runs the
meter samples its CPU time and bytes every `interval_ms`, prices them as the node will, and
kills the task once the cost passes the agent's `max_cost_per_run`. `settle()` sends the
figures; the node signs the `act`, `cpt` and `dat` events (`POST /v1/tasks/{task}`).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from dataclasses import dataclass
from typing import Any, Sequence

from ledger.pricing import task_cost_milli
from node.clock import SystemClock
from node.sdk.agent import AgentClient

CGROUP_NAME_PREFIX = "ats-exec-"
KILL_WAIT_S = 5


@dataclass
class TaskUsage:
    """What a task used, as the kernel reported it."""

    cpu_ms: int = 0
    mem_mb: int = 0
    jobs: int = 1
    read: int = 0
    written: int = 0
    dur_ms: int = 0
    exit_code: int = 0  # the command's exit code; 128 + n when a signal n ended it
    signal: int = 0
    killed_for_cost: bool = False
    measured_by: str = "rusage"  # or "cgroup2"

    def settle_body(self) -> dict[str, int]:
        return {k: getattr(self, k) for k in ("cpu_ms", "mem_mb", "jobs", "read", "written", "dur_ms")}


def cgroup2_root() -> str | None:
    """The mount point of the cgroup v2 hierarchy, if any (/proc/mounts)."""
    try:
        with open("/proc/mounts") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 2 and parts[2] == "cgroup2":
                    return parts[1]
    except OSError:
        pass
    return None


class _Cgroup:
    """A cgroup v2 made for one task, removed after it."""

    def __init__(self, path: str):
        self.path = path

    @classmethod
    def make(cls, name: str) -> "_Cgroup | None":
        root = cgroup2_root()
        if root is None:
            return None
        path = os.path.join(root, name)
        try:
            os.mkdir(path)
        except OSError:
            return None
        if not os.access(os.path.join(path, "cgroup.procs"), os.W_OK):
            os.rmdir(path)
            return None
        return cls(path)

    def _read(self, name: str) -> str | None:
        try:
            with open(os.path.join(self.path, name)) as f:
                return f.read()
        except OSError:
            return None

    def cpu_ms(self) -> int:
        for line in (self._read("cpu.stat") or "").splitlines():
            key, _, value = line.partition(" ")
            if key == "usage_usec":
                return int(value) // 1000
        return 0

    def mem_bytes(self) -> int | None:
        text = self._read("memory.peak")
        return int(text) if text and text.strip().isdigit() else None

    def procs(self) -> list[int]:
        return [int(p) for p in (self._read("cgroup.procs") or "").split()]

    def kill(self) -> None:
        try:
            with open(os.path.join(self.path, "cgroup.kill"), "w") as f:
                f.write("1")
        except OSError:
            for pid in self.procs():
                try:
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def remove(self, clock: SystemClock) -> None:
        deadline = clock.monotonic_s() + KILL_WAIT_S
        if self.procs():  # orphans the command left behind: they were part of the task
            self.kill()
        while self.procs() and clock.monotonic_s() < deadline:
            clock.sleep_s(0.01)
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def _proc_io(pid: int) -> tuple[int, int]:
    """(rchar, wchar) of a process (and the descendants it reaped)."""
    out = {"rchar": 0, "wchar": 0}
    try:
        with open(f"/proc/{pid}/io") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key in out:
                    out[key] = int(value)
    except (OSError, ValueError):
        pass
    return out["rchar"], out["wchar"]


def _proc_cpu_ms(pid: int) -> int:
    """utime + stime + cutime + cstime of a live process, in ms."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks = sum(int(x) for x in fields[11:15])
        return ticks * 1000 // os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0


def _descendants(pid: int, bound: int = 4096) -> int:
    """How many processes the tree rooted at pid holds (pid included), from /proc children lists."""
    count, todo = 0, [pid]
    while todo and count < bound:
        p = todo.pop()
        count += 1
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                todo.extend(int(c) for c in f.read().split())
        except (OSError, ValueError):
            pass
    return count


class TaskMeter:
    """One task of one agent: `await reserve()`, `run()` (blocking, main thread), `await settle()`."""

    def __init__(self, url: str, seed: bytes, argv: Sequence[str], *, estimate: int | None = None,
                 timeout_ms: int | None = None, interval_ms: int = 100, host: str | None = None,
                 clock: SystemClock | None = None, cgroup: bool = True):
        if not argv:
            raise ValueError("a task needs a command")
        self.argv = list(argv)
        self.use_cgroup = cgroup
        self.estimate, self.timeout_ms, self.interval_ms = estimate, timeout_ms, max(10, interval_ms)
        self.host = (host or os.uname().nodename or "ats-exec")[:64]
        self._clock = clock or SystemClock()
        self._url, self._seed = url, bytes(seed)
        self.task: str | None = None
        self.reservation: dict[str, Any] = {}
        self.usage = TaskUsage()

    # -- node -----------------------------------------------------------------------------

    async def _post(self, path: str, body: dict[str, Any], ok: int, retries: int) -> dict[str, Any]:
        # a session per call: reserve and settle may run in different event loops (run_metered)
        async with AgentClient(self._url, self._seed, clock=self._clock, retries=retries) as agent:
            headers = {"Authorization": f"Bearer {agent.gateway_token(ttl_s=3600)}"}
            return await agent.http.json("POST", path, ok=(ok,), data=json.dumps(body).encode(),
                                         content_type="application/json", headers=headers)

    async def reserve(self) -> dict[str, Any]:
        """Hold the estimate; raises AtsError (status 429, 422, …) when the node refuses: do not run.
        Not retried: a lost answer would leave a second reservation (charged when it expires)."""
        body: dict[str, Any] = {"host": self.host}
        if self.estimate is not None:
            body["estimate"] = self.estimate
        if self.timeout_ms is not None:
            body["timeout_ms"] = self.timeout_ms
        self.reservation = await self._post("/v1/tasks", body, 201, retries=0)
        self.task = self.reservation["task"]
        return self.reservation

    async def settle(self) -> dict[str, Any]:
        """Send what the task used; the node records it and settles the reservation."""
        if self.task is None:
            raise RuntimeError("reserve() before settle()")
        return await self._post(f"/v1/tasks/{self.task}", self.usage.settle_body(), 200, retries=3)

    # -- the command ----------------------------------------------------------------------------

    def _cost(self, cpu_ms: int, read: int, written: int) -> int:
        return task_cost_milli(self.reservation.get("prices", {}), cpu_ms, read, written)

    def run(self) -> TaskUsage:
        """Start the command, measure it until it exits (killing it past max_cost_per_run); blocking.

        SIGINT, SIGTERM and SIGHUP sent to this process are passed to the command's process group.
        """
        cg = _Cgroup.make(f"{CGROUP_NAME_PREFIX}{os.getpid()}-{(self.task or os.urandom(4).hex())[:8]}") \
            if self.use_cgroup else None
        argv = self.argv
        if cg is not None:
            argv = ["/bin/sh", "-c", f'echo $$ > "{cg.path}/cgroup.procs" && exec "$@"', "ats-exec", *argv]
            self.usage.measured_by = "cgroup2"
        limit = self.reservation.get("max_cost_per_run")
        started = self._clock.monotonic_s()
        proc = subprocess.Popen(argv, process_group=0)
        forwarded = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}

        def forward(signum: int, _frame: Any) -> None:
            try:
                os.killpg(proc.pid, signum)
            except OSError:
                pass

        for s in forwarded:
            signal.signal(s, forward)
        try:
            self._watch(proc.pid, cg, limit)
            rchar, wchar = _proc_io(proc.pid)  # exited, not yet reaped: includes reaped descendants
            _pid, status, ru = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            for s, handler in forwarded.items():
                signal.signal(s, handler)
        u = self.usage
        u.dur_ms = int((self._clock.monotonic_s() - started) * 1000)
        u.read, u.written = rchar, wchar
        u.cpu_ms = int((ru.ru_utime + ru.ru_stime) * 1000)
        u.mem_mb = -(-ru.ru_maxrss // 1024)  # KiB on Linux
        if cg is not None:
            cg.remove(self._clock)  # orphans killed first: their CPU time counts
            u.cpu_ms = max(u.cpu_ms, cg.cpu_ms())
            peak = cg.mem_bytes()
            if peak is not None:
                u.mem_mb = -(-peak // 1_048_576)
        code = proc.returncode
        u.signal = -code if code < 0 else 0
        u.exit_code = 128 + u.signal if code < 0 else code
        return u

    def _watch(self, pid: int, cg: _Cgroup | None, limit: int | None) -> None:
        """Sample until the command exits (it stays unreaped): jobs, and the cost against the limit."""
        while True:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
            jobs = len(cg.procs()) if cg is not None else _descendants(pid)
            self.usage.jobs = max(self.usage.jobs, jobs)
            if limit is not None and not self.usage.killed_for_cost:
                cpu = cg.cpu_ms() if cg is not None else _proc_cpu_ms(pid)
                rchar, wchar = _proc_io(pid)
                if self._cost(cpu, rchar, wchar) > limit:
                    self.usage.killed_for_cost = True
                    if cg is not None:
                        cg.kill()
                    else:
                        os.killpg(pid, signal.SIGKILL)
            self._clock.sleep_s(self.interval_ms / 1000)


def run_metered(url: str, seed: bytes, argv: Sequence[str], **kw: Any) -> tuple[TaskUsage, dict[str, Any]]:
    """Reserve, run and settle one command (blocking; call from the main thread): (usage, settlement)."""
    import asyncio

    meter = TaskMeter(url, seed, argv, **kw)
    asyncio.run(meter.reserve())
    usage = meter.run()
    return usage, asyncio.run(meter.settle())
