"""The committer's queue: one FIFO per client, served round-robin (issue 10, class 8).

A plain FIFO let one client's back-to-back maximum batches sit in front of
every other client's single events, and every commit held up to
`checkpoint_events_max` events of that one client. Here each request is queued
in chunks of at most `commit_share_events` under its client (the remote
address), and one commit takes from each waiting client in turn at most
`commit_share_events` events (whole requests: many small requests of one client
still share a commit), starting after the clients served last time. So a
commit holds at most `commit_share_events` events of any one client, and a
client with one event waits for at most one commit before its own.

That alone still left a client sending one event at a time (a "light" client:
its whole queue fits one share) waiting for the bulk commit in flight and then
sharing its own commit with a bulk client's share: three times its unloaded
latency on 2 cores. So `Pacer` (pure: the committer gives it the clock) plans
each commit: a light client's events are committed at once and alone; after
that, while the light client is expected back (the gap between its answer and
its next request, learnt per client), a bulk client only gets a commit small
enough to finish before then (the commit's cost learnt from the commits
themselves), or the writer waits for the light client. So the light client
finds the writer free, and the bulk client fills the gaps.

A bulk client is never starved: it earns writer time at `bulk_min` (a fraction)
of the clock, and while a light client is awaited it gets a full share as soon
as it has earned that share's cost. So light clients have priority and bulk
clients a floor, in the writer's time, not in commits: a commit costs what it
costs, and each such commit delays the light client once. (The floor used to
be a count, a full share after 4 waits in a row: on 2 cores that gave bulk
about 40 % of the writer while a light client was active, and the light client
a fifth of its rate; see docs/api.md, `commit_bulk_min_pct`.)
"""

from __future__ import annotations

import asyncio
import math
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Generic, Sized, TypeVar

T = TypeVar("T", bound=Sized)


class FairQueue(Generic[T]):
    """Items (each a sized chunk of events) queued per client, taken round-robin."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()
        self._counts: dict[str, int] = {}  # events queued per client
        self._nonempty = asyncio.Event()
        self._changed = asyncio.Event()
        self.events = 0  # events queued, over every client

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @property
    def clients(self) -> int:
        return len(self._queues)

    def put(self, client: str, item: T) -> None:
        self._queues.setdefault(client, deque()).append(item)
        self._counts[client] = self._counts.get(client, 0) + len(item)
        self.events += len(item)
        self._nonempty.set()
        self._changed.set()

    def queued(self, client: str) -> int:
        """Events queued for client."""
        return self._counts.get(client, 0)

    def light_clients(self, share_max: int) -> list[str]:
        """Clients with something queued, all of it within one share."""
        return [c for c, n in self._counts.items() if n <= share_max]

    def heavy(self, share_max: int) -> bool:
        """Whether some client has more than one share queued."""
        return any(n > share_max for n in self._counts.values())

    async def wait_change(self, timeout_s: float) -> None:
        """Return once something more is queued, or after timeout_s."""
        self._changed.clear()
        try:
            await asyncio.wait_for(self._changed.wait(), timeout_s)
        except asyncio.TimeoutError:
            pass

    async def wait(self) -> None:
        """Return once something is queued."""
        while not self._queues:
            self._nonempty.clear()
            await self._nonempty.wait()

    def take(self, events_max: int, share_max: int, only: "list[str] | None" = None) -> list[T]:
        """A commit's items: from each client in turn (of `only`, if given), its oldest items while
        they add up to at most share_max events (its first always goes) and the commit to at most
        events_max (its first item always goes); the clients served go to the back of the rotation."""
        batch: list[T] = []
        count = 0
        for client in list(self._queues) if only is None else [c for c in list(self._queues) if c in only]:
            queue = self._queues[client]
            share = 0
            while queue and (not batch or count + len(queue[0]) <= events_max) and (
                    share == 0 or share + len(queue[0]) <= share_max):
                item = queue.popleft()
                batch.append(item)
                count += len(item)
                share += len(item)
            if share:
                left = self._counts[client] - share
                if left:
                    self._counts[client] = left
                else:
                    del self._counts[client]
                del self._queues[client]
                if queue:
                    self._queues[client] = queue  # served: to the back of the rotation
            if count >= events_max:
                break
        self.events -= count
        return batch

    def drain(self) -> list[T]:
        """Every queued item (on shutdown)."""
        items = [item for q in self._queues.values() for item in q]
        self._queues.clear()
        self._counts.clear()
        self.events = 0
        return items


CLIENTS_MAX = 1024  # light clients remembered by the pacer (least recently served forgotten first)


@dataclass(frozen=True)
class Plan:
    """The pacer's answer: commit light clients' events (`light`), or at most `events` of the bulk
    clients' (`bulk`), or wait for a light client until `until_s` (`wait`)."""

    action: str  # "light" | "bulk" | "wait"
    events: int = 0
    until_s: float = 0.0


class Pacer:
    """Plans commits so that light clients find the writer free (see the module's docstring).

    Pure: every method takes the time (seconds, monotonic). It learns, per light
    client, the gap between the end of its commit and its next request (the
    shortest of its last GAPS_KEPT gaps, so that it is rarely back earlier than
    expected), and a commit's cost as `base_s` + `event_s` per event
    (exponentially weighted averages; `base_s` plus its mean deviation is used,
    so that a commit planned into a gap rarely overruns it).
    """

    ALPHA = 0.2  # weight of the newest observation
    SLACK = 1.25  # a commit planned into a gap may take at most 1/SLACK of it
    GAPS_KEPT = 8

    def __init__(self, gap_max_s: float = 0.003, bulk_min: float = 0.1):
        assert gap_max_s > 0 and 0 < bulk_min <= 1
        self.gap_max_s, self.bulk_min = gap_max_s, bulk_min
        self.base_s, self.base_dev_s, self.event_s = 0.0003, 0.0, 0.00005
        self._served: OrderedDict[str, float] = OrderedDict()  # light client -> when its commit ended
        self._gaps: dict[str, deque[float]] = {}  # light client -> its last gaps
        self._awaited: dict[str, float] = {}  # light client -> when it is expected back
        self.credit_s = 0.0  # writer time bulk clients have earned (at most one full share's cost)
        self._earned_at: float | None = None

    def arrived(self, client: str, now_s: float) -> None:
        """client queued a request while nothing of it was queued."""
        served = self._served.get(client)
        self._awaited.pop(client, None)
        if served is None:
            return
        gaps = self._gaps.get(client)
        if gaps is None:
            gaps = self._gaps[client] = deque(maxlen=self.GAPS_KEPT)
        gaps.append(now_s - served)

    def gap(self, client: str) -> float | None:
        """client's expected gap: the shortest of its last gaps (None before it has one)."""
        gaps = self._gaps.get(client)
        return min(gaps) if gaps else None

    def served(self, clients: "list[str]", now_s: float) -> None:
        """A commit holding every queued event of these light clients ended."""
        for c in clients:
            self._served[c] = now_s
            self._served.move_to_end(c)
            gap = self.gap(c)
            if gap is not None and gap <= self.gap_max_s:
                self._awaited[c] = now_s + gap
        while len(self._served) > CLIENTS_MAX:
            old, _ = self._served.popitem(last=False)
            self._gaps.pop(old, None)
            self._awaited.pop(old, None)

    def committed(self, events: int, seconds: float) -> None:
        """A commit of `events` events took `seconds`: learn the cost model."""
        if events <= 0 or seconds < 0:
            return
        a = self.ALPHA
        if events <= 2:
            base = max(0.0, seconds - events * self.event_s)
            self.base_dev_s += a * (abs(base - self.base_s) - self.base_dev_s)
            self.base_s += a * (base - self.base_s)
        else:
            self.event_s += a * (max(0.0, seconds - self.base_s) / events - self.event_s)

    def plan(self, now_s: float, light: bool, share: int) -> Plan:
        """The next commit: light clients first; a full bulk share once the bulk clients have earned
        its cost (their floor); a bulk portion fitted into the gap before the next awaited light
        client; or wait for it (or for the floor's next share, whichever comes first)."""
        for c, t in list(self._awaited.items()):
            if now_s > t + self.gap_max_s:  # not back in time: no longer awaited
                del self._awaited[c]
        full = self.cost(share)
        if self._earned_at is not None:
            self.credit_s = min(full, self.credit_s + max(0.0, now_s - self._earned_at) * self.bulk_min)
        self._earned_at = now_s
        if light:
            return Plan("light")
        if not self._awaited:
            return Plan("bulk", share)
        if self.credit_s >= full:  # the bulk clients' floor: a full share, paid for
            self.credit_s -= full
            return Plan("bulk", share)
        room = min(self._awaited.values()) - now_s
        cost = self.base_s + self.base_dev_s
        fits = math.floor((room / self.SLACK - cost) / self.event_s) if self.event_s > 0 else share
        if fits >= 1:
            return Plan("bulk", min(share, fits))
        wake = self._earned_at + (full - self.credit_s) / self.bulk_min  # when the floor's share is earned
        return Plan("wait", until_s=min(min(self._awaited.values()) + self.gap_max_s, wake))

    def cost(self, events: int) -> float:
        """A commit of `events` events' expected cost, seconds (its base plus mean deviation)."""
        return self.base_s + self.base_dev_s + events * self.event_s
