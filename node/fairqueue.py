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
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, deque
from typing import Generic, Sized, TypeVar

T = TypeVar("T", bound=Sized)


class FairQueue(Generic[T]):
    """Items (each a sized chunk of events) queued per client, taken round-robin."""

    def __init__(self) -> None:
        self._queues: OrderedDict[str, deque[T]] = OrderedDict()
        self._nonempty = asyncio.Event()
        self.events = 0  # events queued, over every client

    def __len__(self) -> int:
        return sum(len(q) for q in self._queues.values())

    @property
    def clients(self) -> int:
        return len(self._queues)

    def put(self, client: str, item: T) -> None:
        self._queues.setdefault(client, deque()).append(item)
        self.events += len(item)
        self._nonempty.set()

    async def wait(self) -> None:
        """Return once something is queued."""
        while not self._queues:
            self._nonempty.clear()
            await self._nonempty.wait()

    def take(self, events_max: int, share_max: int) -> list[T]:
        """A commit's items: from each client in turn, its oldest items while they add up to at most
        share_max events (its first always goes) and the commit to at most events_max (its first
        item always goes); the clients served go to the back of the rotation."""
        batch: list[T] = []
        count = 0
        for client in list(self._queues):
            queue = self._queues[client]
            share = 0
            while queue and (not batch or count + len(queue[0]) <= events_max) and (
                    share == 0 or share + len(queue[0]) <= share_max):
                item = queue.popleft()
                batch.append(item)
                count += len(item)
                share += len(item)
            if share:
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
        self.events = 0
        return items
