"""A seeded network and clock for pure engines: many nodes in one thread, integer milliseconds.

Nothing here knows what a node is: hosts are small integers, payloads are opaque objects, and
the simulation that owns the hosts decides what a delivery or a timer means. So any sans-I/O
engine of consensus/ can be driven by it: the replication engine (tests/sim/pure/sim.py) and,
the same way, the escrow engine.

Interface (everything is deterministic given `random.Random(seed)`):

    net = Network(rng, NetOptions(delay_ms_min=1, delay_ms_max=40, loss=0.02, duplication=0.02))
    net.now_ms                      the simulated clock (starts at EPOCH_MS, only `pop` moves it)
    net.send(src, dst, payload)     a message, delivered after a random delay, or lost (loss, a
                                    partition between src and dst, or dst down), or delivered twice
    net.timer(host, delay_ms, payload) -> Event
    net.cancel(timer)               a timer that will not fire (popped and skipped, no step)
    net.inject(at_ms, kind, src, dst, payload)
                                    an outside input at a set time (agents' requests, faults)
                                    a timer for host (dropped if host crashes before it fires)
    net.pop() -> Event | None       the next delivery or timer in time order; advances now_ms
    net.partition(groups)           only hosts in the same group reach each other
    net.heal()                      every host reaches every other again
    net.crash(host) / net.restart(host)
                                    a crashed host receives nothing and its pending timers and
                                    messages to it are dropped; `epoch(host)` counts its restarts
                                    so a driver can tell a reply meant for its previous life

An `Event` is (at_ms, seq, kind, src, dst, payload, epoch) with kind "msg" or "timer"; seq breaks
ties in the order things were scheduled, so two runs of one seed pop the same sequence.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass
from typing import Any, Iterable

EPOCH_MS = 1_780_000_000_000  # a fixed wall-clock origin (2026): events carry plausible times


@dataclass
class NetOptions:
    delay_ms_min: int = 1
    delay_ms_max: int = 40
    loss: float = 0.0
    duplication: float = 0.0


@dataclass
class Event:
    at_ms: int
    seq: int
    kind: str  # msg | timer
    src: int
    dst: int
    payload: Any
    epoch: int  # the destination's epoch when it was scheduled
    cancelled: bool = False


class Network:
    def __init__(self, rng: random.Random, options: NetOptions | None = None, hosts: int = 0):
        self.rng = rng
        self.options = options or NetOptions()
        self.now_ms = EPOCH_MS
        self._queue: list[tuple[int, int, Event]] = []
        self._seq = 0
        self._group: dict[int, int] = {}  # host -> partition group (absent: group 0)
        self._down: set[int] = set()
        self._epoch: dict[int, int] = {h: 0 for h in range(hosts)}
        self.sent = self.lost = self.duplicated = self.delivered = 0

    # -- topology ---------------------------------------------------------------------------

    def partition(self, groups: Iterable[Iterable[int]]) -> None:
        self._group = {h: i for i, g in enumerate(groups) for h in g}

    def heal(self) -> None:
        self._group = {}

    def reachable(self, src: int, dst: int) -> bool:
        return dst not in self._down and self._group.get(src, 0) == self._group.get(dst, 0)

    def crash(self, host: int) -> None:
        self._down.add(host)
        self._epoch[host] = self._epoch.get(host, 0) + 1

    def restart(self, host: int) -> None:
        self._down.discard(host)

    def up(self, host: int) -> bool:
        return host not in self._down

    def epoch(self, host: int) -> int:
        return self._epoch.get(host, 0)

    # -- scheduling -------------------------------------------------------------------------

    def _push(self, at_ms: int, kind: str, src: int, dst: int, payload: Any) -> Event:
        self._seq += 1
        ev = Event(at_ms, self._seq, kind, src, dst, payload, self._epoch.get(dst, 0))
        heapq.heappush(self._queue, (at_ms, self._seq, ev))
        return ev

    def send(self, src: int, dst: int, payload: Any) -> None:
        self.sent += 1
        o = self.options
        if not self.reachable(src, dst) or (o.loss and self.rng.random() < o.loss):
            self.lost += 1
            return
        copies = 2 if o.duplication and self.rng.random() < o.duplication else 1
        self.duplicated += copies - 1
        for _ in range(copies):
            self._push(self.now_ms + self.rng.randint(o.delay_ms_min, o.delay_ms_max), "msg", src, dst, payload)

    def inject(self, at_ms: int, kind: str, src: int, dst: int, payload: Any) -> None:
        """An input from outside the network at a set time (an agent's request, a scheduled fault)."""
        self._push(at_ms, kind, src, dst, payload)

    def timer(self, host: int, delay_ms: int, payload: Any) -> Event:
        return self._push(self.now_ms + max(0, delay_ms), "timer", host, host, payload)

    @staticmethod
    def cancel(timer: Event | None) -> None:
        """A timer that will not fire (a request answered before its timeout, a tick replaced)."""
        if timer is not None:
            timer.cancelled = True

    def pop(self) -> Event | None:
        """The next event for a host that is up and in the epoch it was meant for, or None."""
        while self._queue:
            ev = heapq.heappop(self._queue)[2]
            if ev.cancelled:
                continue  # the clock does not move for a timer that never fires
            self.now_ms = max(self.now_ms, ev.at_ms)
            if ev.dst in self._down or ev.epoch != self._epoch.get(ev.dst, 0):
                continue  # a crashed host's timers and messages are gone
            if ev.kind == "msg" and self._group.get(ev.src, 0) != self._group.get(ev.dst, 0):
                self.lost += 1  # partitioned while in flight
                continue
            self.delivered += ev.kind == "msg"
            return ev
        return None

    def idle(self) -> bool:
        return not self._queue
